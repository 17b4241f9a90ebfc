# %% [markdown]
# # Why linear representations arise (Jiang et al. 2024, ICML, arXiv 2403.03867)
#
# Part 1, simulation: binary concepts on a random DAG (the latent-concept model); a softmax
# next-token model f(x) . g(y) trained by SGD on (context, next token) samples. We watch the
# linearity of every concept (mean pairwise cosine of the differences g(y1) - g(y0) over token
# pairs that differ only in that concept, against random token pairs) rise as the loss falls,
# and run the paper's robustness experiments in one sweep: incomplete context set, incomplete
# concept set, d from well above to well below m, SGD vs Adam, and a large-m model with a
# sampled vocabulary. Independent vs dependent concepts: Euclidean |cos| of their directions.
#
# Part 2, a real model: the direction separating contexts by a concept among final hidden
# states lambda(x) vs the concept's unembedding direction (Park et al.'s causal inner
# product), matched concepts against mismatched ones.
#
# Run: `python demos/origins_of_linearity.py [--out demos/out/origins_of_linearity.html]`
# CI (small): `python demos/origins_of_linearity.py --small`

# %%
from __future__ import annotations

import argparse
import html
import sys
import time
from pathlib import Path

import mechlin
from mechlin import viz
from mechlin.directions import concept_directions
from mechlin.origins import (
    LatentConceptModel,
    default_contexts,
    embedding_unembedding_alignment,
    origins_sweep,
    train_origins,
)

parser = argparse.ArgumentParser(description="Jiang et al.'s origins of linear representations")
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--n-concepts", type=int, default=8)
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
parser.add_argument("--max-pairs", type=int, default=20, help="word pairs per concept (part 2)")
parser.add_argument(
    "--concepts",
    nargs="+",
    default=["male -> female", "English -> French", "verb -> Ved", "noun -> plural",
             "lower -> upper", "adj -> comparative", "country -> capital", "thing -> color"],
)  # fmt: skip
parser.add_argument("--small", action="store_true", help="CI size: fewer steps, seeds, concepts")
parser.add_argument("--out", type=Path, default=Path("demos/out/origins_of_linearity.html"))
args = parser.parse_args([] if "ipykernel" in sys.modules else None)
if args.small:
    args.steps, args.seeds, args.max_pairs = 600, [0], 6
    args.concepts = ["male -> female", "English -> French", "noun -> plural", "lower -> upper"]

sections: list[tuple[str, str]] = []


def pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def figure(result) -> str:
    return viz.plot_html(result)


# %% [markdown]
# ## Part 1: one run of the default setting, then the sweep

# %%
t0 = time.time()
lcm = LatentConceptModel(args.n_concepts, seed=0)
run = train_origins(lcm, steps=args.steps, record_every=max(1, args.steps // 20))
print(run.summary())
lin = run.unembed_linearity.nanmean(1)
curve = "\n".join(
    f"  step {s:5d}  loss-opt {float(loss) - run.optimum:7.3f}  linearity g {float(x):.3f}"
    for s, loss, x in zip(run.steps.tolist(), run.loss, lin, strict=True)
)
sections.append(
    (
        "One run: linearity rises as the loss falls",
        f"<p>{html.escape(repr(lcm))}, edges {lcm.edges}</p>"
        + pre(run.summary() + "\n" + curve)
        + figure(run),
    )
)

sweep = origins_sweep(
    n_concepts=args.n_concepts,
    seeds=tuple(args.seeds),
    steps=args.steps,
    record_every=max(1, args.steps // 8),
    progress=True,
)
print(sweep.summary())
table = sweep.by_condition()
sections.append(
    (
        "Sweep: the paper's robustness experiments (one factor at a time)",
        pre(sweep.summary()) + figure(sweep) + table.to_html(float_format=lambda v: f"{v:.3f}"),
    )
)
t1 = time.time()

# %% [markdown]
# ## Part 2: context directions vs unembedding directions on a bundled model

# %%
model = mechlin.load_model(args.model, device="cpu")
dirs = concept_directions(model, args.concepts, too_few="skip")
contexts = default_contexts(dirs, max_pairs=args.max_pairs)
causal = embedding_unembedding_alignment(model, dirs, contexts)
euclid = embedding_unembedding_alignment(
    model, concept_directions(model, list(dirs.names), inner_product="euclidean"), contexts
)
print(causal.summary())
print(euclid.summary())
sections.append(
    (
        f"{args.model}: context (lambda) directions vs unembedding directions",
        "<p>Causal inner product (Park et al.'s whitening) and Euclidean. The bundled models tie "
        "the input embedding to the unembedding, so the comparison uses final hidden states "
        "lambda(x) at the last token of contexts whose next word is the base vs the target word "
        "(or English vs French Europarl prefixes).</p>"
        + pre(causal.summary())
        + figure(causal)
        + pre(euclid.summary())
        + figure(euclid),
    )
)
t2 = time.time()

# %% [markdown]
# ## Findings

# %%
base = table.loc["base"]
low_d = [c for c in table.index if c.startswith("d=")]
findings = [
    f"linearity of g rises from {float(lin[0]):.3f} (step 0) to {float(lin[-1]):.3f} as the "
    f"loss falls from {float(run.loss[0]):.3f} to {float(run.loss[-1]):.3f} "
    f"(optimum {run.optimum:.3f})",
    "final linearity of g by condition (mean over seeds; random-pair baseline in brackets): "
    + "; ".join(
        f"{c}: {r['unembed_linearity']:.3f} ({r['unembed_baseline']:+.3f})"
        for c, r in table.iterrows()
    ),
    f"base setting |cos| of concept directions: independent {base['orth_independent']:.3f} vs "
    f"dependent {base['orth_dependent']:.3f} (random directions {base['orth_random']:.3f})",
    f"{args.model}: matched cosine {causal.matched_mean:.3f} vs mismatched |cosine| "
    f"{causal.mismatched_mean_abs:.3f} (causal); {euclid.matched_mean:.3f} vs "
    f"{euclid.mismatched_mean_abs:.3f} (Euclidean)",
    f"d values swept: {low_d}; time: simulation {t1 - t0:.0f} s, real model {t2 - t1:.0f} s",
]
for line in findings:
    print(line)
sections.insert(
    0, ("Findings", "<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in findings) + "</ul>")
)
path = viz.write_report(args.out, "Origins of linear representations (Jiang et al. 2024)", sections)
print(f"wrote {path}")
