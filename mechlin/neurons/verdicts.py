"""Neuron verdicts: monosemantic, in superposition, or polysemantic - with the evidence.

``classify_neurons(model, datasets)`` follows Gurnee et al.'s procedure per feature:

1. **Best single neurons.** In every layer, rank neurons by mean difference on the training split
   and fit a k = 1 probe on each of the top 30; the one with the best *training* F1 is the
   layer's best neuron and its held-out F1 gives the "best-neuron F1 by layer" curve (picking
   by held-out F1 would select on the test set). The best layer's neuron is the candidate.
2. **Superposition evidence** at that layer: the F1 of k-sparse probes for k = 1..8 (a sharp gain
   from k = 1 to k ~ 5 means the feature is spread over neurons), and iterative pruning: remove
   the best neuron, refit the best k = 1 probe on the rest, 10 times (F1 that stays high means
   many neurons carry it).
3. **Verification of monosemantic candidates.** A high k = 1 F1 is not enough (the paper's
   Pythia-70M L1N111 scores MCC 0.997 for "prime factors" yet fires on ~26 unrelated n-grams).
   So: how often the neuron exceeds the probe's threshold on broad unrelated text, and a
   mean-ablation (the neuron set to its mean over broad text at every position): the LM loss
   should rise on the feature's texts and not on broad text.
4. **Polysemantic neurons**: neurons that are strong (k = 1 F1 >= ``strong_f1`` on both the
   training and the test split) for two or more unrelated features (features of different
   datasets), with their top-activating broad-text tokens. With small test sets a few such
   coincidences are expected by chance (30 neurons x n_layers probes per feature).

Thresholds are options, and every verdict carries the numbers it was decided on.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechlin import support, viz
from mechlin._checks import checked
from mechlin._logreg import fit_l2
from mechlin._splits import Split, split_indices
from mechlin._types import Model
from mechlin.errors import ArgumentError, EmptyInputError, NotInResultError
from mechlin.neurons.activations import NeuronActivations, collect_activations
from mechlin.neurons.probing import (
    binary_labels,
    binary_metrics,
    check_activations,
    fit_probe,
    neuron_scores,
)
from mechlin.results import Result
from mechlin.sites import hook_name
from mechlin.tokens import input_device

PRUNE_STEPS = 10
SWEEP_KS = (1, 2, 3, 4, 5, 6, 7, 8)
SWEEP_LINES = 6  # plot_sweeps draws lines up to this many features, heatmaps beyond


@dataclass(frozen=True)
class FeatureVerdict(Result):
    """What one feature's best neurons show, with the numbers behind the verdict."""

    feature: str
    verdict: str  # "monosemantic candidate" | "superposition" | "distributed" | "not decodable"
    reason: str
    layer: int
    neuron: int
    f1_k1: float
    f1_by_k: Float[Tensor, " k"]  # k = 1..8 at the best layer (mean-difference selection)
    prune_f1: Float[Tensor, " step"]  # best k = 1 F1 after removing the i best neurons
    threshold: float  # activation at which the k = 1 probe flips
    broad_fire_rate: float  # fraction of broad-text tokens above the threshold (on the + side)
    loss_rise_feature: float  # mean-ablation: LM loss increase on the feature's positive texts
    loss_rise_broad: float  # and on broad text

    @property
    def gain(self) -> float:
        """F1 gained from k = 1 to the best k <= 8 (superposition evidence)."""
        return float(self.f1_by_k.max()) - self.f1_k1


@dataclass(frozen=True)
class PolysemanticNeuron(Result):
    layer: int
    neuron: int
    features: tuple[str, ...]
    f1s: tuple[float, ...]
    top_tokens: tuple[str, ...]  # its top-activating broad-text tokens (distinct)


@dataclass(frozen=True)
class NeuronReport(Result):
    """Per feature: best single neuron by layer, verdicts; across features: polysemantic neurons."""

    features: tuple[str, ...]
    layers: tuple[int, ...]
    best_f1: Float[Tensor, "feature layer"]  # best held-out k = 1 F1 in each layer
    best_neuron: Int[Tensor, "feature layer"]
    verdicts: tuple[FeatureVerdict, ...]
    polysemantic: tuple[PolysemanticNeuron, ...]
    model_name: str = ""

    def __post_init__(self) -> None:
        shape = (len(self.features), len(self.layers))
        if tuple(self.best_f1.shape) != shape or tuple(self.best_neuron.shape) != shape:
            raise ArgumentError(f"best_f1 and best_neuron must be [feature, layer] = {shape}")
        if len(self.verdicts) != len(self.features):
            raise ArgumentError("one verdict per feature")

    def verdict(self, feature: str) -> FeatureVerdict:
        if feature not in self.features:
            raise NotInResultError(f"no feature {feature!r}; features: {self.features}")
        return self.verdicts[self.features.index(feature)]

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(
            [
                dict(
                    feature=v.feature,
                    verdict=v.verdict,
                    layer=v.layer,
                    neuron=v.neuron,
                    f1_k1=round(v.f1_k1, 3),
                    f1_k4=round(float(v.f1_by_k[3]), 3) if v.f1_by_k.numel() > 3 else math.nan,
                    gain=round(v.gain, 3),
                    prune_f1_after_10=round(float(v.prune_f1[-1]), 3),
                    broad_fire_rate=round(v.broad_fire_rate, 4),
                    loss_rise_feature=round(v.loss_rise_feature, 4),
                    loss_rise_broad=round(v.loss_rise_broad, 4),
                    reason=v.reason,
                )
                for v in self.verdicts
            ]
        )

    def plot(self, ax: Any = None) -> Any:
        """Best single-neuron held-out F1 as a features x layers heatmap (the best layer boxed)."""
        n_f, n_l = len(self.features), len(self.layers)
        width = min(12.0, 3.0 + 0.32 * n_l + 0.06 * max(map(len, self.features)))
        fig, ax = viz.axes(ax, figsize=(width, 1.2 + 0.28 * n_f))
        img = ax.imshow(
            self.best_f1.float().numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0
        )
        ax.set_xticks(range(n_l))
        ax.set_xticklabels([str(layer) for layer in self.layers], fontsize=7)
        ax.set_yticks(range(n_f))
        ax.set_yticklabels(self.features, fontsize=7)
        from matplotlib.patches import Rectangle  # noqa: PLC0415  (only when drawn)

        for row, col in enumerate(self.best_f1.argmax(1).tolist()):
            ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, ec="red", lw=1.2))
        ax.set_xlabel("layer")
        title = f"best single neuron's held-out F1 by layer {self.model_name}".strip()
        ax.set_title(title + " (red: best layer)", fontsize=9)
        fig.colorbar(img, ax=ax, fraction=0.04, pad=0.02, label="k = 1 F1")
        return fig

    def plot_sweeps(self, fig: Any = None) -> Any:
        """F1 against k (1..8) at each feature's best layer, and the pruning curves.

        Up to ``SWEEP_LINES`` features are drawn as lines; more would be spaghetti, so they are
        drawn as two heatmaps (features x k, features x neurons removed), feature names on y.
        """
        n_f = len(self.verdicts)
        if n_f <= SWEEP_LINES:
            return self._sweep_lines(fig)
        height = min(24.0, 1.6 + 0.22 * n_f)
        width = 10.0 + 0.05 * max(map(len, self.features))
        fig, panels = viz.figure(1, 2, fig=fig, figsize=(width, height))
        axes = panels[0]
        grids = (
            (_padded([v.f1_by_k for v in self.verdicts]), 1, "k", "F1 vs k at the best layer"),
            (_padded([v.prune_f1 for v in self.verdicts]), 0, "best neurons removed", ""),
        )
        for ax, (grid, first, xlabel, title) in zip(axes, grids, strict=True):
            img = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_xticks(range(grid.shape[1]))
            ax.set_xticklabels([str(first + i) for i in range(grid.shape[1])], fontsize=7)
            ax.set_yticks(range(n_f))
            ax.set_yticklabels([v.feature for v in self.verdicts], fontsize=6)
            ax.set(xlabel=xlabel, title=title or "iterative pruning: best k = 1 F1")
        fig.colorbar(img, ax=list(axes), fraction=0.03, pad=0.02, label="held-out F1")
        return fig

    def _sweep_lines(self, fig: Any = None) -> Any:
        fig, panels = viz.figure(1, 2, fig=fig, figsize=(10, 3.6))
        axes = panels[0]
        for v in self.verdicts:
            axes[0].plot(
                range(1, v.f1_by_k.numel() + 1),
                v.f1_by_k.numpy(),
                marker="o",
                ms=3,
                label=v.feature,
            )
            axes[1].plot(range(v.prune_f1.numel()), v.prune_f1.numpy(), marker="o", ms=3)
        axes[0].set(
            xlabel="k", ylabel="held-out F1", title="F1 vs k at the best layer", ylim=(0, 1.02)
        )
        axes[1].set(
            xlabel="best neurons removed",
            ylabel="best k = 1 F1",
            ylim=(0, 1.02),
            title="iterative pruning",
        )
        axes[0].legend(fontsize=6)
        return fig

    def _repr_html_(self) -> str:
        return super()._repr_html_() + self.to_frame().to_html()

    def report(
        self, path: str | os.PathLike[str], *, extra: Sequence[tuple[str, str]] = ()
    ) -> Path:
        """One offline HTML page: the layer curves, sweeps, verdict table, polysemantic neurons."""
        sweeps = self.plot_sweeps()
        try:
            sweeps_html = viz.figure_to_html(sweeps)
        finally:
            viz.close(sweeps)
        poly = "".join(
            f"<li>L{p.layer}N{p.neuron}: "
            + ", ".join(
                f"{html.escape(f)} (F1 {s:.2f})" for f, s in zip(p.features, p.f1s, strict=True)
            )
            + f"; top broad-text tokens: {html.escape(repr(p.top_tokens))}</li>"
            for p in self.polysemantic
        )
        sections = [
            ("Best single neuron by layer", viz.plot_html(self)),
            ("Superposition evidence", sweeps_html),
            ("Verdicts", self.to_frame().to_html(index=False)),
            ("Polysemantic neurons", f"<ul>{poly}</ul>" if poly else "<p>none found</p>"),
            *extra,
        ]
        return viz.write_report(path, f"Neuron report {self.model_name}".strip(), sections)


# ---------------------------------------------------------------- pieces


def _padded(rows: Sequence[Tensor]) -> Float[Tensor, "feature step"]:
    """Curves of possibly different lengths as one grid, NaN where a curve is shorter."""
    width = max(r.numel() for r in rows)
    grid = torch.full((len(rows), width), math.nan, dtype=torch.float64)
    for i, r in enumerate(rows):
        grid[i, : r.numel()] = r.double()
    return grid


def best_single_neurons(
    X: Float[Tensor, "example neuron"],
    y: Tensor,
    train: Tensor,
    test: Tensor,
    *,
    top: int = 30,
) -> tuple[
    Int[Tensor, " top"],
    Float[Tensor, " top"],
    Float[Tensor, " top"],
    Float[Tensor, " top"],
    Float[Tensor, " top"],
]:
    """k = 1 probes on the ``top`` neurons by mean difference.

    Returns the neurons (in mean-difference order), their test F1, their training F1, and the
    probes' weights and biases. Pick the best neuron by *training* F1 (``pick_best``): choosing
    it by test F1 would select on the held-out data and inflate the F1 reported for it.
    """
    X = X.double()
    ranking = _ranking(X[train], y[train])[:top]
    cols = X[:, ranking].T[..., None]  # (top, n, 1)
    w, b = fit_l2(cols[:, train], y[train])  # (top, 1), (top,)
    logits = cols[:, :, 0] * w + b[:, None]  # (top, n)
    test_f1 = [binary_metrics(row[test], y[test])["f1"] for row in logits]
    train_f1 = [binary_metrics(row[train], y[train])["f1"] for row in logits]
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return ranking, as_tensor(test_f1), as_tensor(train_f1), w[:, 0], b


def pick_best(train_f1: Float[Tensor, " top"]) -> int:
    """Index of the best training F1 (ties: the higher mean difference, i.e. the first)."""
    return int(torch.argmax(train_f1))


def _ranking(X: Float[Tensor, "n neuron"], y: Tensor) -> Int[Tensor, " neuron"]:
    return torch.argsort(neuron_scores(X, y, "mean_diff"), descending=True, stable=True)


def prune_curve(
    X: Float[Tensor, "example neuron"],
    y: Tensor,
    train: Tensor,
    test: Tensor,
    *,
    steps: int = PRUNE_STEPS,
    top: int = 30,
) -> Float[Tensor, " step"]:
    """Test F1 of the best k = 1 probe (chosen on training F1) after removing the best
    neuron, refitting, ``steps`` times."""
    keep = torch.ones(X.shape[1], dtype=torch.bool)
    out = []
    for _ in range(steps + 1):
        cols = torch.nonzero(keep).flatten()
        neurons, f1, train_f1, _, _ = best_single_neurons(X[:, cols], y, train, test, top=top)
        best = pick_best(train_f1)
        out.append(float(f1[best]))
        keep[cols[neurons[best]]] = False
    return torch.tensor(out, dtype=torch.float64)


@torch.no_grad()
def lm_loss(
    model: Model,
    texts: Sequence[str],
    *,
    hooks: Sequence[Any] = (),
    batch_size: int = 8,
    max_tokens: int = 64,
) -> float:
    """Mean next-token loss over the real tokens of ``texts`` (right-padded batches)."""
    rows = [model.to_tokens(t)[0][:max_tokens] for t in texts]
    total, count = 0.0, 0
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        lengths = torch.tensor([r.shape[0] for r in chunk])
        tokens = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
        for i, r in enumerate(chunk):
            tokens[i, : r.shape[0]] = r
        tokens = tokens.to(input_device(model))
        with model.hooks(fwd_hooks=list(hooks)):
            logits = model(tokens)  # (batch, pos, vocab)
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        nll = -logp.gather(-1, tokens[:, 1:, None])[..., 0]  # (batch, pos-1)
        real = torch.arange(tokens.shape[1] - 1)[None] < (lengths - 1)[:, None]
        total += float(nll.cpu()[real].sum())
        count += int(real.sum())
    return total / max(count, 1)


def _ablation_hook(model: Model, layer: int, neuron: int, value: float) -> tuple[str, Any]:
    support.require(model, "neuron_ablation")

    def hook(act: Tensor, hook: Any) -> Tensor:
        act[..., neuron] = value
        return act

    return hook_name(model, "mlp_post", layer), hook


# ---------------------------------------------------------------- the analysis


def _features_of(datasets: Any) -> list[tuple[str, str, Any, Tensor]]:
    """(feature name, dataset name, dataset, boolean labels): multiclass -> one-vs-rest."""
    items = datasets.items() if isinstance(datasets, Mapping) else [(d.name, d) for d in datasets]
    out = []
    for name, ds in items:
        if len(ds) == 0:
            raise EmptyInputError(f"dataset {name!r} is empty")
        classes = tuple(ds.classes)
        if len(classes) == 2:
            y, _ = binary_labels(ds.labels, 1)
            out.append((name, name, ds, y))
        else:
            for c, cls in enumerate(classes):
                y, _ = binary_labels(ds.labels, c)
                out.append((f"{name}:{cls}", name, ds, y))
    return out


@checked
def classify_neurons(
    model: Model,
    datasets: Mapping[str, Any] | Sequence[Any],
    *,
    broad_texts: Sequence[str],
    layers: Sequence[int] | None = None,
    top: int = 30,
    mono_f1: float = 0.9,
    strong_f1: float = 0.8,
    superposition_gain: float = 0.1,
    max_fire_rate: float = 0.05,
    n_ablation_texts: int = 16,
    split: Split = "stratified",
    seed: int = 42,
    batch_size: int = 16,
    activations: Mapping[str, NeuronActivations] | None = None,
    progress: bool = True,
) -> NeuronReport:
    """Find each feature's best neurons and decide, with evidence, what kind of neurons they are.

    ``datasets``: feature datasets (``mechlin.datasets.features``; each has ``texts``, ``labels``,
    ``classes``, ``pooling``); multiclass ones are probed one class against the rest.
    ``broad_texts``: unrelated text for the fire-rate and ablation checks. ``activations`` may
    pass already-collected activations per dataset name (with the dataset's pooling).
    """
    features = _features_of(datasets)
    if not features:
        raise EmptyInputError("datasets is empty: pass at least one labelled feature dataset")
    if not broad_texts:
        raise EmptyInputError("broad_texts is empty: pass unrelated text to check neurons on")
    layer_list = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    hooks = [hook_name(model, "mlp_post", layer) for layer in layer_list]
    acts: dict[str, NeuronActivations] = dict(activations or {})
    for _, ds_name, ds, _ in features:
        if ds_name not in acts:
            acts[ds_name] = collect_activations(
                model,
                ds,
                hooks=hooks,
                pooling=ds.pooling,
                batch_size=batch_size,
                progress=progress,
            )
    broad = collect_activations(
        model,
        list(broad_texts),
        hooks=hooks,
        pooling="none",
        batch_size=batch_size,
        progress=progress,
    )
    best_f1 = torch.zeros(len(features), len(layer_list), dtype=torch.float64)
    best_neuron = torch.zeros(len(features), len(layer_list), dtype=torch.long)
    strong: dict[tuple[int, int], list[tuple[str, str, float]]] = {}
    verdicts = []
    broad_loss: float | None = None
    bar = tqdm(features, desc="classifying neurons", disable=not progress)
    for f_i, (feature, ds_name, ds, y) in enumerate(bar):
        groups = getattr(ds, "groups", None)
        train, test = split_indices(y, split=split, seed=seed, groups=groups)
        fits = []
        for l_i, hook in enumerate(hooks):
            X = check_activations(acts[ds_name][hook], len(y))  # NaN/inf refused
            neurons, f1, train_f1, w, b = best_single_neurons(X, y, train, test, top=top)
            i = pick_best(train_f1)
            best_f1[f_i, l_i], best_neuron[f_i, l_i] = f1[i], neurons[i]
            fits.append((float(w[i]), float(b[i])))
            for n_i in (
                torch.nonzero((f1 >= strong_f1) & (train_f1 >= strong_f1)).flatten().tolist()
            ):
                key = (layer_list[l_i], int(neurons[n_i]))
                strong.setdefault(key, []).append((feature, ds_name, float(f1[n_i])))
        l_best = int(torch.argmax(best_f1[f_i]))
        layer, neuron = layer_list[l_best], int(best_neuron[f_i, l_best])
        X = acts[ds_name][hooks[l_best]].double()
        ranking = _ranking(X[train], y[train])
        ks = [k for k in SWEEP_KS if k <= X.shape[1]]
        f1_by_k = torch.tensor(
            [fit_probe(X, y, ranking[:k], train, test)[2]["f1"] for k in ks], dtype=torch.float64
        )
        prune = prune_curve(X, y, train, test, top=top)
        w_best, b_best = fits[l_best]
        threshold = -b_best / w_best if w_best != 0 else math.inf
        column = broad[hooks[l_best]][:, neuron].double()
        fires = (column > threshold) if w_best > 0 else (column < threshold)
        mean_value = float(column.mean())
        pos_texts = [ds.texts[i] for i in torch.nonzero(y).flatten()[:n_ablation_texts].tolist()]
        broad_sample = list(broad_texts)[:n_ablation_texts]
        ablate = [_ablation_hook(model, layer, neuron, mean_value)]
        if broad_loss is None:  # the same broad sample for every feature: one clean run
            broad_loss = lm_loss(model, broad_sample)
        rise_feature = lm_loss(model, pos_texts, hooks=ablate) - lm_loss(model, pos_texts)
        rise_broad = lm_loss(model, broad_sample, hooks=ablate) - broad_loss
        verdicts.append(
            _verdict(
                feature,
                layer,
                neuron,
                float(best_f1[f_i, l_best]),
                f1_by_k,
                prune,
                threshold,
                float(fires.double().mean()),
                rise_feature,
                rise_broad,
                mono_f1=mono_f1,
                gain_min=superposition_gain,
                max_fire_rate=max_fire_rate,
            )
        )
    poly = _polysemantic(strong, broad, model, layer_list, hooks)
    return NeuronReport(
        features=tuple(f[0] for f in features),
        layers=tuple(layer_list),
        best_f1=best_f1,
        best_neuron=best_neuron,
        verdicts=tuple(verdicts),
        polysemantic=poly,
        model_name=str(getattr(model.cfg, "model_name", "")),
    )


def _verdict(
    feature: str,
    layer: int,
    neuron: int,
    f1: float,
    f1_by_k: Tensor,
    prune: Tensor,
    threshold: float,
    fire_rate: float,
    rise_feature: float,
    rise_broad: float,
    *,
    mono_f1: float,
    gain_min: float,
    max_fire_rate: float,
) -> FeatureVerdict:
    gain = float(f1_by_k.max()) - f1
    selective = rise_feature > max(2 * rise_broad, 1e-4)
    facts = (
        f"k=1 F1 {f1:.2f} (L{layer}N{neuron}), best k<=8 F1 {float(f1_by_k.max()):.2f}, "
        f"F1 after pruning 10 best {float(prune[-1]):.2f}, fires on {fire_rate:.1%} of broad "
        f"tokens, ablation loss rise {rise_feature:+.4f} on the feature vs {rise_broad:+.4f} broad"
    )
    if max(f1, float(f1_by_k.max())) < 0.6:  # neither the best neuron nor k <= 8 reads it
        verdict = "not decodable"
    elif f1 >= mono_f1 and fire_rate <= max_fire_rate and selective:
        verdict = "monosemantic candidate"
    elif gain >= gain_min:
        verdict = "superposition"
    elif float(prune[-1]) >= 0.9 * f1:
        verdict = "distributed"
    elif f1 >= mono_f1:
        verdict = "unverified single neuron"
    else:
        verdict = "superposition" if gain > 0 else "distributed"
    return FeatureVerdict(
        feature=feature,
        verdict=verdict,
        reason=facts,
        layer=layer,
        neuron=neuron,
        f1_k1=f1,
        f1_by_k=f1_by_k,
        prune_f1=prune,
        threshold=float(threshold),
        broad_fire_rate=fire_rate,
        loss_rise_feature=rise_feature,
        loss_rise_broad=rise_broad,
    )


def _polysemantic(
    strong: dict[tuple[int, int], list[tuple[str, str, float]]],
    broad: NeuronActivations,
    model: Model,
    layer_list: list[int],
    hooks: list[str],
) -> tuple[PolysemanticNeuron, ...]:
    out = []
    for (layer, neuron), hits in sorted(strong.items()):
        if len({ds for _, ds, _ in hits}) < 2:  # strong for features of one dataset only
            continue
        column = broad[hooks[layer_list.index(layer)]][:, neuron]
        top_rows = torch.argsort(column, descending=True)[:40]
        tokens = [model.tokenizer.decode([int(broad.token_ids[r])]) for r in top_rows]
        distinct = tuple(dict.fromkeys(tokens))[:12]
        out.append(
            PolysemanticNeuron(
                layer=layer,
                neuron=neuron,
                features=tuple(f for f, _, _ in hits),
                f1s=tuple(s for _, _, s in hits),
                top_tokens=distinct,
            )
        )
    return tuple(out)


@checked
def neuron_activations_html(
    model: Model, texts: Sequence[str], neurons: Sequence[tuple[int, int]]
) -> str:
    """circuitsvis ``text_neuron_activations`` of chosen (layer, neuron) pairs over ``texts``."""
    import circuitsvis as cv  # noqa: PLC0415

    if not neurons:
        raise EmptyInputError("no neurons to show: pass (layer, neuron) pairs")
    layers = sorted({layer for layer, _ in neurons})
    hooks = [hook_name(model, "mlp_post", layer) for layer in layers]
    acts = collect_activations(model, list(texts), hooks=hooks, pooling="none", progress=False)
    tokens, values = [], []
    for e in range(len(texts)):
        rows = acts.rows_of(e)
        tokens.append([model.tokenizer.decode([int(t)]) for t in acts.token_ids[rows]])
        cols = [acts[hook_name(model, "mlp_post", layer)][rows, n] for layer, n in neurons]
        values.append(torch.stack(cols, -1)[:, None, :].float())  # (pos, 1, neuron)
    rendered = cv.activations.text_neuron_activations(
        tokens=tokens,
        activations=values,
        first_dimension_name="Layer",
        second_dimension_name="Neuron",
        first_dimension_labels=["selected"],
        second_dimension_labels=[f"L{layer}N{n}" for layer, n in neurons],
    )
    return viz.circuitsvis_html(rendered)


@checked
def top_activating_tokens(
    acts: NeuronActivations, hook: str | int, neuron: int, tokenizer: Any, *, n: int = 20
) -> list[tuple[str, float]]:
    """The ``n`` rows where a neuron fires most, as (token, activation)."""
    column = acts[hook][:, neuron].double()
    order = torch.argsort(column, descending=True)[:n]
    return [(tokenizer.decode([int(acts.token_ids[r])]), float(column[r])) for r in order]
