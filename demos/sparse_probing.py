# %% [markdown]
# # Finding neurons in a haystack: language and compound-word neurons (Gurnee et al. 2023)
#
# For each bundled model this demo
# 1. builds labelled feature datasets from text shipped with mechlin (Europarl in 11 languages,
#    compound words in Gutenberg prose, token properties, position, countries in Europe),
# 2. collects every layer's MLP neurons and finds each feature's best single neuron per layer,
# 3. decides per feature - with its numbers - whether one neuron carries it (verified on broad
#    text and by mean-ablation), several do (superposition), or it is spread out,
# 4. sweeps k = 1..256 at the best layer (with shuffled-label and rotated-basis controls) and
#    compares the six selection methods on French,
# 5. writes an HTML report with the curves, verdicts and circuitsvis views of the neurons.
#
# Run: `python demos/sparse_probing.py [--models smollm2-135m gemma-3-270m] [--n-per-class 50]`

# %%
from __future__ import annotations

import argparse
import html
import time
from pathlib import Path

import mechlin
from mechlin.datasets import features as fd
from mechlin.neurons.activations import collect_activations
from mechlin.neurons.probing import probe_sweep
from mechlin.neurons.verdicts import classify_neurons, neuron_activations_html
from mechlin.viz import plot_html

OUT = Path(__file__).resolve().parent / "out"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Sparse probing of language and compound neurons")
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
    p.add_argument("--n-per-language", type=int, default=60)
    p.add_argument("--n-per-class", type=int, default=40, help="per class, other features")
    p.add_argument("--context-words", type=int, default=12, help="words before a token target")
    p.add_argument("--bigrams", type=int, default=10, help="how many compound words")
    p.add_argument(
        "--features",
        nargs="+",
        default=["language", "compound", "properties", "position", "country"],
    )
    p.add_argument("--ablation-texts", type=int, default=16)
    p.add_argument("--methods-k", type=int, default=8, help="largest k of the method comparison")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args()


# %%
def datasets_for(model: object, args: argparse.Namespace) -> dict[str, fd.FeatureDataset]:
    tok = model.tokenizer  # type: ignore[attr-defined]
    out: list[fd.FeatureDataset] = []
    if "language" in args.features:
        out.append(fd.language_identity(n_per_language=args.n_per_language))
    if "compound" in args.features:
        bigrams = fd.COMPOUND_BIGRAMS[: args.bigrams]
        out += fd.compound_words(
            bigrams=bigrams, n_per_class=args.n_per_class, context_words=args.context_words
        ).values()
    if "properties" in args.features:
        out += fd.text_properties(
            tok, n_per_class=args.n_per_class, context_words=args.context_words
        ).values()
    if "position" in args.features:
        out.append(fd.position(tok, n_per_class=args.n_per_class))
    if "country" in args.features:
        out.append(fd.country_in_europe())
    return {ds.name: ds for ds in out}  # keyed by name: "language", "compound:great deal", ...


def run(model_name: str, args: argparse.Namespace) -> list[str]:
    t0 = time.time()
    model = mechlin.load_model(model_name)
    datasets = datasets_for(model, args)
    for name, ds in datasets.items():
        print(f"  {name}: {len(ds)} examples, {ds.class_balance()}")
    broad = fd.broad_text(n=max(args.ablation_texts, 32))
    hooks = mechlin.hook_names(model, "mlp_post")
    acts = {
        name: collect_activations(model, ds, hooks=hooks, pooling=ds.pooling, desc=name)
        for name, ds in datasets.items()
    }
    report = classify_neurons(
        model,
        datasets,
        broad_texts=broad,
        activations=acts,
        n_ablation_texts=args.ablation_texts,
    )

    # %% F1 at k = 1, 4, 16 (and the rest of the grid) at each feature's best layer, controls
    lines = [f"## {model_name} ({model.cfg.n_layers} layers x {model.cfg.d_mlp} neurons)"]
    lines.append("feature | verdict | best neuron | k=1 F1 | k=4 F1 | k=16 F1 | rel. depth")
    sweeps = []
    for v in report.verdicts:
        if v.feature in datasets:  # a binary feature
            ds, positive = datasets[v.feature], 1
        else:  # one class of a multiclass feature: "<dataset>:<class>"
            ds_name, _, cls = v.feature.rpartition(":")
            ds = datasets[ds_name]
            positive = ds.classes.index(cls)
        sweep = probe_sweep(
            acts[ds.name][v.layer],
            ds.labels,
            positive=positive,
            split="stratified",
            n_shuffles=3,
            n_rotations=2,
            name=v.feature,
        )
        sweeps.append(sweep)
        at = {k: sweep.at(k) for k in (1, 4, 16) if k in sweep.ks}
        lines.append(
            f"{v.feature} | {v.verdict} | L{v.layer}N{v.neuron} | {v.f1_k1:.3f} | "
            f"{at.get(4, float('nan')):.3f} | {at.get(16, float('nan')):.3f} | "
            f"{v.layer / (model.cfg.n_layers - 1):.2f}"
        )

    # %% the six selection methods on French (optimal up to k = methods_k)
    extra = []
    if "language" in datasets:
        lang = datasets["language"]
        fr = report.verdict("language:fr")
        methods = probe_sweep(
            acts["language"][fr.layer],
            lang.labels,
            positive=lang.classes.index("fr"),
            ks=tuple(range(1, args.methods_k + 1)),
            split="stratified",
            methods=("mean_diff", "f_stat", "mi", "l1", "random", "optimal"),
            time_limit=20.0,
            name=f"French vs rest, layer {fr.layer}: selection methods",
        )
        extra.append(("Selection methods (French)", plot_html(methods)))
        shown = [k for k in (1, 2, 4) if k in methods.ks]
        lines.append(
            f"methods on French, F1 at k={'/'.join(map(str, shown))}: "
            + ", ".join(
                f"{m} " + "/".join(f"{methods.at(k, m):.2f}" for k in shown)
                for m in methods.methods
            )
        )
        # circuitsvis: the best language neurons on one sentence per language
        best = {
            (report.verdict(f"language:{c}").layer, report.verdict(f"language:{c}").neuron)
            for c in ("fr", "de", "it", "en")
        }
        samples = [lang.texts[i] for i in range(0, len(lang), max(1, len(lang) // 11))][:11]
        extra.append(
            ("Language neurons on text", neuron_activations_html(model, samples, sorted(best)))
        )
    compounds = [v for v in report.verdicts if v.feature.startswith("compound:")]
    if compounds:
        top = sorted(compounds, key=lambda v: -v.f1_k1)[:4]
        texts = [datasets[v.feature].texts[int(datasets[v.feature].labels.argmax())] for v in top]
        # (the first positive example of each: a prefix ending at the compound)
        extra.append(
            (
                "Compound-word neurons on text",
                neuron_activations_html(model, texts, [(v.layer, v.neuron) for v in top]),
            )
        )
    extra.append(("k sweeps at the best layer", "".join(plot_html(s) for s in sweeps)))
    extra.append(("Summary", "<pre>" + html.escape("\n".join(lines)) + "</pre>"))
    path = args.out or OUT / f"sparse_probing_{model_name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    report.report(path, extra=extra)
    poly = [f"L{p.layer}N{p.neuron} ({', '.join(p.features)})" for p in report.polysemantic]
    lines.append(f"polysemantic neurons (strong for 2+ unrelated features): {poly[:8] or 'none'}")
    lines.append(f"report: {path} ({time.time() - t0:.0f} s)")
    return lines


# %%
if __name__ == "__main__":
    args = parse_args()
    for name in args.models:
        print("\n".join(run(name, args)))
