# %% [markdown]
# # Dissecting factual recall (Geva et al. 2023): the main mechlin demo
#
# On a bundled model and the facts it knows (ROME's known_1000 plus prompts built from the
# shipped country knowledge base), measure the three stages of factual recall: relation
# propagation and attribute extraction by attention knockout, extraction rates of MHSA vs MLP,
# and subject enrichment by the attributes rate, then write one HTML report that opens offline.
#
# Run: `python demos/dissect_factual_recall.py [--model gemma-3-270m] [--n-facts 30] [--full]`

# %%
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import mechlin
from mechlin.datasets.countries import country_facts
from mechlin.datasets.facts import load_known_1000

parser = argparse.ArgumentParser(description="Geva et al.'s dissection of factual recall")
parser.add_argument("--model", default="gemma-3-270m", choices=sorted(mechlin.BUNDLED_MODELS))
parser.add_argument(
    "--n-facts",
    type=int,
    default=30,
    help="facts taken from each source (known_1000, countries) before filtering",
)
parser.add_argument("--full", action="store_true", help="every fact of both sources (slow)")
parser.add_argument("--out", type=Path, default=Path("demos/out/dissect_factual_recall.html"))
args = parser.parse_args([] if "ipykernel" in sys.modules else None)

# %% Facts: ROME's known_1000 and country prompts (capital, language, continent)
known_1000 = load_known_1000()
countries = country_facts()
if not args.full:
    # Spread the sample over the lists (they are grouped by relation).
    known_1000 = known_1000[:: max(1, len(known_1000) // args.n_facts)][: args.n_facts]
    countries = countries[:: max(1, len(countries) // args.n_facts)][: args.n_facts]
facts = known_1000 + countries

# %% Dissect
model = mechlin.load_model(args.model)
dissection = mechlin.dissect_recall(model, facts)
print(dissection.summary())

# %% Report
path = dissection.report(args.out)
print(f"wrote {path}")
