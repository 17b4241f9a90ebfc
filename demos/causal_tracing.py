# %% [markdown]
# # Causal tracing of factual recall (ROME) on the bundled models
#
# For each model: which `known_1000` facts it knows, then ROME's causal tracing of hidden
# states, MLP and attention outputs over the first `--n-facts` known facts, averaged into ROME's
# six token buckets (AIE per layer, with 95% bands), plus the three single-prompt heatmaps of
# the first fact. Results are stored per fact under `--out`, so an interrupted run resumes.
#
# Run: `python demos/causal_tracing.py [--models smollm2-135m gemma-3-270m] [--n-facts 4]`
# Full size: `--n-facts 10000` (every known fact; hours on a CPU).

# %%
from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import mechlin
from mechlin.datasets.facts import known_facts, load_known_1000
from mechlin.viz import figure_to_html, write_report

parser = argparse.ArgumentParser(description="ROME causal tracing on the bundled models")
parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
parser.add_argument("--n-facts", type=int, default=4, help="known facts to trace per model")
parser.add_argument("--n-samples", type=int, default=10, help="noise samples (ROME: 10)")
parser.add_argument("--out", type=Path, default=Path("demos/out/causal_tracing"))
parser.add_argument(
    "--check-facts", type=int, default=None,
    help="check only the first N facts of known_1000 for knowledge (default: all 1209)",
)  # fmt: skip
args = parser.parse_args([] if "ipykernel" in sys.modules else None)

facts = load_known_1000()[: args.check_facts]
sections = []
for name in args.models:
    # %% Which facts does the model know?
    model = mechlin.load_model(name)
    split = known_facts(model, facts)
    print(f"{name}: {split}")
    chosen = list(split.known[: args.n_facts])

    # %% Average causal effects over the chosen known facts (resumable)
    ace = mechlin.average_causal_effects(
        model, chosen, n_samples=args.n_samples, out=args.out / name / f"n{args.n_samples}"
    )
    print(ace.summary())
    fig = ace.plot()
    figure = figure_to_html(fig)
    plt.close(fig)

    # %% The three traces of the first fact
    fact = chosen[0]
    singles = []
    for kind in ("resid", "mlp", "attn"):
        trace = mechlin.causal_trace(
            model, fact.prompt, fact.subject, kind=kind, n_samples=args.n_samples
        )
        fig = trace.plot()
        singles.append(figure_to_html(fig))
        plt.close(fig)
    sections.append(
        (
            f"{name}: {split.n_known} of {split.n_total} known_1000 facts known",
            f"<pre>{html.escape(ace.summary())}</pre>{figure}"
            f"<h3>{html.escape(fact.prompt)} → {html.escape(fact.attribute)}</h3>"
            + "".join(singles),
        )
    )

path = write_report(args.out / "report.html", "Causal tracing (ROME)", sections)
print(f"wrote {path}")
