# %% [markdown]
# # Toy models of superposition (Elhage et al. 2022) and capacity (Scherlis et al. 2022)
#
# 1. The phase diagram: n = 2 features in d = 1 dimension, the second feature's importance
#    against the feature density. Dense features never share the dimension; past a sparsity
#    threshold the two are stored as an antipodal pair (superposition).
# 2. Capacity allocation: n = 20 features, d = 5, importance 0.7^i, at several sparsities.
#    Capacity goes in order of importance: dedicated (C = 1), shared (0 < C < 1), ignored (0).
# 3. The ReLU-hidden toy: its neurons, monosemantic or polysemantic, as sparsity rises.
# 4. A bridge to smollm2-135m: for token features the sparse-probing report calls monosemantic
#    or not, their frequency in the shipped broad text beside the toy's prediction.
#
# Run: `python demos/superposition.py [--steps 5000] [--grid 10] [--skip-bridge] [--out F]`
# CI:  `python demos/superposition.py --steps 800 --lr 1e-2 --grid 5 --seeds 1 --skip-bridge`

# %%
from __future__ import annotations

import argparse
import html
import time
from pathlib import Path

import torch

from mechlin import viz
from mechlin.neurons.capacity_sweep import superposition_sweep
from mechlin.neurons.superposition import toy_superposition

OUT = Path(__file__).resolve().parent / "out"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Toy models of superposition and capacity")
    p.add_argument("--steps", type=int, default=5000, help="training steps per toy model")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (paper: 1e-3)")
    p.add_argument("--grid", type=int, default=10, help="phase diagram: values per axis")
    p.add_argument("--seeds", type=int, default=2, help="seeds per setting (lowest loss kept)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--skip-bridge", action="store_true", help="no real-model section")
    p.add_argument("--bridge-model", default="smollm2-135m")
    p.add_argument("--bridge-layers", type=int, nargs="+", default=[1, 5, 9, 13])
    p.add_argument("--n-per-class", type=int, default=40, help="bridge: examples per class")
    p.add_argument("--bigrams", type=int, default=3, help="bridge: compound words (rare)")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args()


def pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


# %% the phase diagram and the capacity allocation
def toy_sections(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[str], object]:
    sweep = superposition_sweep(
        grid=args.grid,
        n_seeds=args.seeds,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        progress=True,
    )
    phase, cap = sweep.phase, sweep.capacity
    lines = [sweep.summary()]
    cnt = cap.counts()
    lines.append(
        "Finding 1 (Elhage): superposition appears only as sparsity rises - at S=0 the cells are "
        f"{[viz_phase(p) for p in phase.phase[:, 0].tolist()]} (low to high importance); at "
        f"S={float(phase.sparsity[-1]):.3g}: {[viz_phase(p) for p in phase.phase[:, -1].tolist()]}"
    )
    lines.append(
        "Finding 2 (Scherlis): dedicated features by sparsity "
        f"{dict(zip(cap.sparsity.tolist(), cnt['dedicated'].tolist(), strict=True))}, shared "
        f"{dict(zip(cap.sparsity.tolist(), cnt['fractional'].tolist(), strict=True))}; pairs "
        f"out of importance order {cap.order_violations().tolist()}"
    )
    # the toy's W at a few sparsities, Elhage et al.'s Fig. 3 view (n=20, d=5)
    sections = [
        ("Phase diagram (n=2, d=1)", viz.plot_html(phase) + pre(phase.summary())),
        ("Capacity allocation (n=20, d=5, I_i = 0.7^i)", viz.plot_html(cap) + pre(cap.summary())),
    ]
    return sections, lines, cap


def viz_phase(p: int) -> str:
    return ("none", "dedicated", "superposition")[p]


# %% the ReLU-hidden toy: neurons
def relu_section(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[str]]:
    sparsities = [0.0, 0.7, 0.9, 0.97, 0.99]
    toy = toy_superposition(
        10,
        5,
        sparsity=torch.tensor(sparsities).repeat_interleave(args.seeds),
        importance=0.8,
        hidden="relu",
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        progress=True,
    )
    best = torch.argmin(toy.loss.view(len(sparsities), args.seeds), 1)
    best += torch.arange(len(sparsities)) * args.seeds
    lines, figs = [], []
    for s, k in zip(sparsities, best.tolist(), strict=True):
        one = toy.instance(k)
        roles = one.neurons()
        lines.append(
            f"ReLU toy n=10, d=5, S={s}: {roles.counts()}, features per neuron "
            f"{roles.n_features[0].tolist()}, {int(one.n_represented()[0])} features represented"
        )
        figs.append(viz.plot_html(roles))
    chosen = toy.instance(best[0].item())
    for k in best[1:].tolist():
        chosen = _cat(chosen, toy.instance(k))
    body = viz.plot_html(chosen) + "".join(figs) + pre("\n".join(lines))
    return [("ReLU hidden layer: monosemantic and polysemantic neurons", body)], lines


def _cat(a: object, b: object) -> object:
    from mechlin.neurons.superposition import ToySuperposition

    assert isinstance(a, ToySuperposition) and isinstance(b, ToySuperposition)
    return ToySuperposition(
        W=torch.cat([a.W, b.W]),
        b=torch.cat([a.b, b.b]),
        importance=torch.cat([a.importance, b.importance]),
        sparsity=torch.cat([a.sparsity, b.sparsity]),
        loss=torch.cat([a.loss, b.loss]),
        seeds=a.seeds + b.seeds,
        hidden=a.hidden,
        steps=a.steps,
        lr=a.lr,
        weight_decay=a.weight_decay,
        batch_size=a.batch_size,
    )


# %% the bridge to a real model
CAVEATS = """What this comparison can show: whether the features the probes find a single dedicated
neuron for are the frequent ones in text, as the toy predicts (a frequent = dense feature, if
important, gets a dimension of its own; rare = sparse features share or are dropped).
What it cannot show: the toy's sparsity and importance are chosen, a language model's are not
measured - token frequency stands in for density and nothing here measures importance; a probe
verdict ("monosemantic candidate") is evidence about one neuron, not the toy's capacity C_i of
a feature direction; d_mlp neurons and ~10^4+ features are far from n=20, d=5; and a handful
of features is an anecdote, not a correlation. Agreement is consistent with the toy's story,
disagreement does not refute it."""


def bridge_section(
    args: argparse.Namespace, cap: object
) -> tuple[list[tuple[str, str]], list[str]]:
    import mechlin
    from mechlin.datasets import features as fd
    from mechlin.neurons.verdicts import classify_neurons

    model = mechlin.load_model(args.bridge_model, device="cpu")
    tok = model.tokenizer
    datasets = dict(fd.text_properties(tok, n_per_class=args.n_per_class, context_words=12).items())
    bigrams = fd.COMPOUND_BIGRAMS[: args.bigrams]
    for ds in fd.compound_words(
        bigrams=bigrams, n_per_class=args.n_per_class, context_words=12
    ).values():
        datasets[ds.name] = ds
    broad = fd.broad_text(n=32)
    report = classify_neurons(
        model,
        datasets,
        broad_texts=broad,
        layers=args.bridge_layers,
        n_ablation_texts=8,
        progress=True,
    )
    # frequency of each feature among broad-text tokens
    token_texts = [
        tok.decode([i]) for t in broad for i in tok(t, add_special_tokens=False)["input_ids"]
    ]
    n_tokens = len(token_texts)
    freq = {}
    for name in datasets:
        if name.startswith("compound:"):
            bigram = name.split(":", 1)[1]
            kinds = [k for t in broad for k, _ in fd.bigram_occurrences(t, bigram)]
            freq[name] = kinds.count("positive") / n_tokens
        else:
            freq[name] = sum(fd.token_has_property(t, name) for t in token_texts) / n_tokens
    rows = []
    for v in sorted(report.verdicts, key=lambda v: -freq.get(v.feature, 0.0)):
        f = freq.get(v.feature, float("nan"))
        toy_says = (
            "dedicated neuron (dense: like S <= 0.7)"
            if f >= 0.3
            else "shared / superposition (sparse)"
            if f >= 0.003
            else "very sparse: shared or dropped unless very important"
        )
        rows.append(
            f"<tr><td>{html.escape(v.feature)}</td><td>{f:.4f}</td><td>{1 - f:.4f}</td>"
            f"<td>{toy_says}</td><td>{html.escape(v.verdict)}</td><td>L{v.layer}N{v.neuron}</td>"
            f"<td>{v.f1_k1:.2f}</td><td>{v.broad_fire_rate:.4f}</td></tr>"
        )
    table = (
        "<table><tr><th>feature</th><th>frequency in broad text</th><th>toy sparsity 1 - f</th>"
        "<th>toy prediction</th><th>probe verdict</th><th>best neuron</th><th>k=1 F1</th>"
        "<th>neuron fires on (broad tokens)</th></tr>" + "".join(rows) + "</table>"
    )
    lines = [
        f"bridge ({args.bridge_model}, layers {args.bridge_layers}): "
        + ", ".join(f"{v.feature} f={freq[v.feature]:.3g} -> {v.verdict}" for v in report.verdicts)
    ]
    body = (
        table
        + pre(report.to_frame()[["feature", "verdict", "f1_k1", "gain", "reason"]].to_string())
        + viz.plot_html(report)
        + f"<p>{html.escape(CAVEATS)}</p>"
    )
    return [("Bridge: a real model's neurons beside the toy", body)], lines


# %%
if __name__ == "__main__":
    args = parse_args()
    t0 = time.time()
    sections, lines, cap = toy_sections(args)
    relu, relu_lines = relu_section(args)
    sections += relu
    lines += relu_lines
    if not args.skip_bridge:
        bridge, bridge_lines = bridge_section(args, cap)
        sections += bridge
        lines += bridge_lines
    lines.append(f"total {time.time() - t0:.0f} s")
    sections.insert(0, ("Summary", pre("\n".join(lines))))
    path = args.out or OUT / "superposition.html"
    viz.write_report(path, "Toy models of superposition and capacity", sections)
    print("\n".join(lines))
    print(f"report: {path}")
