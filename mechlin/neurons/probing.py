"""Sparse probing: how few neurons does it take to read a feature? (Gurnee et al. 2023)

A k-sparse probe selects k neurons of one layer on the training split, fits a balanced L2
logistic regression (C = 1) on them, and scores held-out F1. If one neuron (k = 1) reads the
feature perfectly it is a monosemantic candidate; if F1 climbs steeply from k = 1 to k ~ 5, the
feature is spread over several neurons (superposition evidence). Defaults follow the paper:
70/30 split with seed 42 (``split="paper"``: unstratified; ``"stratified"`` and ``"grouped"``
are offered), k grid 1..256, neurons ranked by mean difference.

Selection methods (all on training rows only):
``"mean_diff"`` |mean(pos) - mean(neg)|; ``"f_stat"`` one-way ANOVA F; ``"mi"`` mutual information
of the label and the neuron's activation binned into 16 training quantiles (the paper used
scikit-learn's nearest-neighbour estimator; rankings agree on clear features, not in ties);
``"l1"`` |coefficient| of an L1 logistic regression (C = 0.1) on all standardised neurons;
``"random"`` k random neurons; ``"optimal"`` optimal sparse probing on the top 50 neurons by mean
difference (exact search for k <= 2, a hinge-loss MIP solved by HiGHS for k <= 8; see
``mechlin.neurons._osp``).

Controls: ``probe_sweep(n_shuffles=...)`` refits on permuted training labels (F1 should fall to
chance); ``n_rotations=`` rotates the neuron basis by a random orthogonal matrix before selecting
(if neurons are a privileged basis, small-k F1 falls after rotation).

Multiclass labels are probed one-vs-rest: pass ``positive=`` (the class index). Why not
TransformerLens's ``tools.analysis.sparse_probing``? It fits one binary probe with mean-difference
selection on a stratified split; the paper's unstratified split, five other selection methods and
OSP need their own path. Its ``fit_sparse_probe`` serves as an independent reference in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechlin import viz
from mechlin._checks import checked
from mechlin._logreg import fit_l1, fit_l2
from mechlin._splits import Split, split_indices
from mechlin.errors import (
    ArgumentError,
    EmptyInputError,
    NotInResultError,
    ProbeInputError,
)
from mechlin.neurons._osp import exhaustive_support, mip_support
from mechlin.results import Result

Method = Literal["mean_diff", "f_stat", "mi", "l1", "random", "optimal"]
METHODS: tuple[str, ...] = get_args(Method)
DEFAULT_KS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 32, 64, 128, 256)
OSP_MAX_K = 8
OSP_CANDIDATES = 50


# ---------------------------------------------------------------- inputs, split, metrics


def binary_labels(
    labels: Int[Tensor, " example"] | Bool[Tensor, " example"], positive: int | None
) -> tuple[Bool[Tensor, " example"], int]:
    """``labels == positive`` as booleans; ``positive`` may be omitted for two classes."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() == 0:
        raise EmptyInputError(f"labels must be a non-empty 1-d tensor, got {tuple(labels.shape)}")
    classes = sorted(int(c) for c in torch.unique(labels.long()))
    if len(classes) < 2:
        raise ProbeInputError(
            f"labels hold one class only ({classes}): a probe needs positive and negative examples"
        )
    if positive is None:
        if len(classes) > 2:
            raise ProbeInputError(
                f"labels have {len(classes)} classes {classes}: pass positive=<class> to probe "
                "one class against the rest"
            )
        positive = classes[1]
    if positive not in classes:
        raise ProbeInputError(f"positive={positive} is not among the label classes {classes}")
    return labels.long() == positive, positive


def check_activations(acts: Tensor, n_labels: int) -> Float[Tensor, "example neuron"]:
    if acts.ndim != 2:
        raise ProbeInputError(f"activations must be [example, neuron], got {tuple(acts.shape)}")
    if acts.shape[0] != n_labels:
        raise ProbeInputError(
            f"{acts.shape[0]} activation rows but {n_labels} labels: one label per row"
        )
    if not torch.is_floating_point(acts):
        raise ProbeInputError(f"activations must be floating point, got {acts.dtype}")
    bad = ~torch.isfinite(acts)
    if bool(bad.any()):
        rows = torch.nonzero(bad.any(1)).flatten()[:5].tolist()
        raise ProbeInputError(
            f"activations contain {int(bad.sum())} NaN/inf values (first rows: {rows}); "
            "recollect them or drop those rows"
        )
    return acts.to(torch.float64)


def binary_metrics(logits: Float[Tensor, " n"], y: Bool[Tensor, " n"]) -> dict[str, float]:
    """F1, precision, recall, MCC, accuracy at logit 0, and tie-aware ROC-AUC."""
    pred = logits > 0
    tp = int((pred & y).sum())
    tn = int((~pred & ~y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denom if denom else 0.0
    # ROC-AUC = P(score_pos > score_neg) + 0.5 P(tie), via average ranks
    _, inverse, counts = torch.unique(logits, return_inverse=True, return_counts=True)
    ranks = (counts.cumsum(0) - (counts - 1) / 2.0).double()[inverse]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    auc = (float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return dict(
        f1=f1,
        precision=precision,
        recall=recall,
        mcc=mcc,
        roc_auc=auc,
        accuracy=(tp + tn) / y.numel(),
    )


# ---------------------------------------------------------------- neuron selection


def neuron_scores(
    X: Float[Tensor, "n neuron"], y: Bool[Tensor, " n"], method: Method, *, seed: int = 42
) -> Float[Tensor, " neuron"]:
    """Ranking score of every neuron (higher = selected first), from training rows only."""
    pos, neg = X[y], X[~y]
    if method == "mean_diff":
        return (pos.mean(0) - neg.mean(0)).abs()
    if method == "f_stat":
        grand = X.mean(0)
        between = len(pos) * (pos.mean(0) - grand) ** 2 + len(neg) * (neg.mean(0) - grand) ** 2
        within = ((pos - pos.mean(0)) ** 2).sum(0) + ((neg - neg.mean(0)) ** 2).sum(0)
        return between / (within / (X.shape[0] - 2)).clamp(min=1e-30)
    if method == "mi":
        return _binned_mutual_information(X, y)
    if method == "l1":
        Xs = (X - X.mean(0)) / X.std(0).clamp(min=1e-12)
        coef, _ = fit_l1(Xs, y, C=0.1)
        # ties (zeros) broken by mean difference so a full ranking exists
        return coef.abs() + 1e-9 * (pos.mean(0) - neg.mean(0)).abs() / (
            1 + (pos.mean(0) - neg.mean(0)).abs().max()
        )
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(X.shape[1], generator=gen, dtype=torch.float64)
    raise ArgumentError(f"method must be one of {METHODS}, not {method!r}")


def _binned_mutual_information(
    X: Float[Tensor, "n neuron"], y: Bool[Tensor, " n"], n_bins: int = 16
) -> Float[Tensor, " neuron"]:
    # bin edges at training quantiles (nearest rank: torch.quantile caps its input size)
    ranks = (torch.linspace(0, 1, n_bins + 1)[1:-1] * (X.shape[0] - 1)).round().long()
    edges = X.sort(0).values[ranks].T.contiguous()  # (neuron, n_bins - 1)
    bins = torch.searchsorted(edges, X.T.contiguous())  # (neuron, n)
    joint = torch.zeros(X.shape[1], n_bins, 2, dtype=torch.float64)
    for cls in (0, 1):
        mask = (y if cls else ~y).to(torch.float64)
        joint[:, :, cls].scatter_add_(1, bins, mask.expand(X.shape[1], -1))
    p = joint / X.shape[0]
    px = p.sum(2, keepdim=True)
    py = p.sum(1, keepdim=True)
    ratio = torch.where(p > 0, p / (px * py).clamp(min=1e-300), torch.ones_like(p))
    return (p * ratio.log()).sum((1, 2))


def select_neurons(
    X: Float[Tensor, "n neuron"],
    y: Bool[Tensor, " n"],
    k: int,
    method: Method,
    *,
    seed: int = 42,
    time_limit: float = 60.0,
) -> tuple[Int[Tensor, " k"], str]:
    """The k neurons ``method`` picks on these (training) rows, and a status note."""
    if method != "optimal":
        scores = neuron_scores(X, y, method, seed=seed)
        return torch.argsort(scores, descending=True, stable=True)[:k], ""

    if k > OSP_MAX_K:
        raise ProbeInputError(f"method='optimal' is limited to k <= {OSP_MAX_K}, got k={k}")
    cand = torch.argsort(neuron_scores(X, y, "mean_diff"), descending=True, stable=True)
    cand = cand[: min(OSP_CANDIDATES, X.shape[1])]
    if k <= 2:
        sol = exhaustive_support(X[:, cand], y, k)
    else:
        sol = mip_support(X[:, cand], y, k, time_limit=time_limit)
    return cand[sol.support], sol.status


# ---------------------------------------------------------------- one probe


@dataclass(frozen=True)
class SparseProbeResult(Result):
    """A k-sparse logistic probe: the neurons it reads, its weights and held-out metrics."""

    neurons: Int[Tensor, " k"]  # selected neuron indices
    coef: Float[Tensor, " k"]
    intercept: float
    f1: float
    precision: float
    recall: float
    mcc: float
    roc_auc: float
    accuracy: float
    k: int
    method: str
    split: str
    seed: int
    positive: int  # the label value probed as the positive class
    train_idx: Int[Tensor, " n_train"]
    test_idx: Int[Tensor, " n_test"]
    status: str = ""  # OSP: "exhaustive", "optimal" or the MIP's time-limit gap

    def __post_init__(self) -> None:
        if self.neurons.shape != self.coef.shape or self.neurons.numel() != self.k:
            raise ArgumentError("neurons and coef must both hold k entries")

    def decision(self, acts: Float[Tensor, "example neuron"]) -> Float[Tensor, " example"]:
        """The probe's logit for each row of a full ``[example, neuron]`` matrix."""
        return acts[:, self.neurons].double() @ self.coef + self.intercept

    def __repr__(self) -> str:
        return (
            f"SparseProbeResult(k={self.k}, method={self.method!r}, neurons="
            f"{self.neurons.tolist()[:8]}, F1={self.f1:.3f}, MCC={self.mcc:.3f}, "
            f"AUC={self.roc_auc:.3f})"
        )


def fit_probe(
    X: Float[Tensor, "example neuron"],
    y: Bool[Tensor, " example"],
    neurons: Int[Tensor, " k"],
    train_idx: Int[Tensor, " n_train"],
    test_idx: Int[Tensor, " n_test"],
    *,
    C: float = 1.0,
) -> tuple[Float[Tensor, " k"], float, dict[str, float]]:
    """Fit the L2 probe on training rows of the chosen neurons; metrics on the test rows."""
    w, b = fit_l2(X[train_idx][:, neurons][None], y[train_idx], C=C)
    logits = X[test_idx][:, neurons] @ w[0] + b[0]
    return w[0], float(b[0]), binary_metrics(logits, y[test_idx])


@checked
def sparse_probe(
    acts: Float[Tensor, "example neuron"],
    labels: Int[Tensor, " example"] | Bool[Tensor, " example"],
    *,
    k: int,
    method: Method = "mean_diff",
    split: Split = "paper",
    seed: int = 42,
    test_fraction: float = 0.3,
    positive: int | None = None,
    groups: Int[Tensor, " example"] | None = None,
    C: float = 1.0,
    time_limit: float = 60.0,
) -> SparseProbeResult:
    """Select ``k`` neurons with ``method`` on the training split and score a probe on them.

    >>> g = torch.Generator().manual_seed(0)
    >>> acts = torch.randn(200, 50, generator=g)
    >>> labels = (torch.arange(200) % 2).long()
    >>> acts[:, 7] += 4.0 * labels                       # plant a feature neuron
    >>> r = sparse_probe(acts, labels, k=1)
    >>> r.neurons.tolist(), r.f1 > 0.95
    ([7], True)
    """
    X = check_activations(torch.as_tensor(acts), torch.as_tensor(labels).shape[0])
    y, positive = binary_labels(labels, positive)
    if not 1 <= k <= X.shape[1]:
        raise ProbeInputError(f"k={k} must be between 1 and the {X.shape[1]} neurons")
    train_idx, test_idx = split_indices(
        y, split=split, test_fraction=test_fraction, seed=seed, groups=groups
    )
    if train_idx.numel() <= k:
        raise ProbeInputError(
            f"only {train_idx.numel()} training examples for k={k} neurons: use more "
            "examples or a smaller k"
        )
    neurons, status = select_neurons(
        X[train_idx], y[train_idx], k, method, seed=seed, time_limit=time_limit
    )
    coef, intercept, m = fit_probe(X, y, neurons, train_idx, test_idx, C=C)
    return SparseProbeResult(
        neurons=neurons,
        coef=coef,
        intercept=intercept,
        k=k,
        method=method,
        split=split,
        seed=seed,
        positive=positive,
        train_idx=train_idx,
        test_idx=test_idx,
        status=status,
        **m,
    )


# ---------------------------------------------------------------- the k sweep


@dataclass(frozen=True)
class ProbeSweep(Result):
    """Held-out metrics of k-sparse probes for each selection method over a grid of k.

    Metric tensors are ``[method, k]``; NaN where a method does not run at that k (OSP above
    k = 8). ``shuffled_f1``/``rotated_f1`` are the controls, ``[repeat, k]``, mean-difference
    selection.
    """

    _nonfinite: ClassVar[frozenset[str]] = frozenset(
        {"f1", "precision", "recall", "mcc", "roc_auc"}
    )  # NaN: not run at that k

    ks: tuple[int, ...]
    methods: tuple[str, ...]
    f1: Float[Tensor, "method k"]
    precision: Float[Tensor, "method k"]
    recall: Float[Tensor, "method k"]
    mcc: Float[Tensor, "method k"]
    roc_auc: Float[Tensor, "method k"]
    neurons: tuple[tuple[Int[Tensor, " _"], ...], ...]  # [method][k] selected neurons
    shuffled_f1: Float[Tensor, "n_shuffles k"]
    rotated_f1: Float[Tensor, "n_rotations k"]
    positive: int
    n_train: int
    n_test: int
    name: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        shape = (len(self.methods), len(self.ks))
        for f in ("f1", "precision", "recall", "mcc", "roc_auc"):
            if tuple(getattr(self, f).shape) != shape:
                raise ArgumentError(f"{f} must be [method, k] = {shape}")

    def at(self, k: int, method: str = "mean_diff", metric: str = "f1") -> float:
        """One metric of one method at one k."""
        if k not in self.ks:
            raise NotInResultError(f"k={k} is not in the sweep's grid {self.ks}")
        if method not in self.methods:
            raise NotInResultError(f"method {method!r} was not swept ({self.methods})")
        value = getattr(self, metric)[self.methods.index(method), self.ks.index(k)]
        return float(value)

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        rows = []
        for m_i, method in enumerate(self.methods):
            for k_i, k in enumerate(self.ks):
                rows.append(
                    dict(
                        method=method,
                        k=k,
                        **{
                            f: float(getattr(self, f)[m_i, k_i])
                            for f in ("f1", "precision", "recall", "mcc", "roc_auc")
                        },
                    )
                )
        return pd.DataFrame(rows)

    def plot(self, ax: Any = None) -> Any:
        """F1 against k (log scale), one line per method, with the controls' ranges."""
        fig, ax = viz.axes(ax, figsize=(6, 3.6))
        ks = np.array(self.ks)
        for m_i, method in enumerate(self.methods):
            ax.plot(ks, self.f1[m_i].numpy(), marker="o", ms=3, label=method)
        for ctrl, label, color in (
            (self.shuffled_f1, "shuffled labels", "0.6"),
            (self.rotated_f1, "rotated basis", "tab:pink"),
        ):
            if ctrl.shape[0]:
                ax.fill_between(
                    ks, ctrl.min(0).values, ctrl.max(0).values, color=color, alpha=0.35, label=label
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (neurons)")
        ax.set_ylabel("held-out F1")
        ax.set_ylim(0, 1.02)
        ax.set_title(self.name or "sparse probe sweep")
        ax.legend(fontsize=7)
        return fig


@checked
def probe_sweep(
    acts: Float[Tensor, "example neuron"],
    labels: Int[Tensor, " example"] | Bool[Tensor, " example"],
    *,
    ks: tuple[int, ...] = DEFAULT_KS,
    methods: tuple[Method, ...] = ("mean_diff",),
    split: Split = "paper",
    seed: int = 42,
    test_fraction: float = 0.3,
    positive: int | None = None,
    groups: Int[Tensor, " example"] | None = None,
    C: float = 1.0,
    n_shuffles: int = 0,
    n_rotations: int = 0,
    time_limit: float = 60.0,
    name: str = "",
) -> ProbeSweep:
    """Probe at every k of ``ks`` with every method, on one split; controls optional.

    k values above the number of neurons or training rows are dropped (listed in ``notes``).
    Each method ranks the neurons once; the probe at k reads its top k.
    """
    X = check_activations(torch.as_tensor(acts), torch.as_tensor(labels).shape[0])
    y, positive = binary_labels(labels, positive)
    for m in methods:
        if m not in METHODS:
            raise ArgumentError(f"unknown method {m!r}; methods are {METHODS}")
    train_idx, test_idx = split_indices(
        y, split=split, test_fraction=test_fraction, seed=seed, groups=groups
    )
    limit = min(X.shape[1], train_idx.numel() - 1)
    grid = tuple(sorted(set(ks)))
    notes = [f"k={k} dropped: above {limit} (neurons or training rows)" for k in grid if k > limit]
    grid = tuple(k for k in grid if k <= limit)
    if not grid:
        raise ProbeInputError(f"no k in {ks} fits {X.shape[1]} neurons and the training rows")
    Xtr, ytr = X[train_idx], y[train_idx]
    metrics = {f: torch.full((len(methods), len(grid)), math.nan) for f in _METRICS}
    neurons: list[tuple[Tensor, ...]] = []
    for m_i, method in enumerate(methods):
        row = []
        ranking = None
        if method != "optimal":
            ranking = torch.argsort(
                neuron_scores(Xtr, ytr, method, seed=seed), descending=True, stable=True
            )
        for k_i, k in enumerate(grid):
            if ranking is not None:
                chosen = ranking[:k]
            elif k <= OSP_MAX_K:
                chosen, status = select_neurons(Xtr, ytr, k, "optimal", time_limit=time_limit)
                if status not in ("exhaustive", "optimal"):
                    notes.append(f"optimal k={k}: {status}")
            else:
                row.append(torch.empty(0, dtype=torch.long))
                continue
            _, _, scores = fit_probe(X, y, chosen, train_idx, test_idx, C=C)
            for f in _METRICS:
                metrics[f][m_i, k_i] = scores[f]
            row.append(chosen)
        neurons.append(tuple(row))
    return ProbeSweep(
        ks=grid,
        methods=tuple(methods),
        neurons=tuple(neurons),
        shuffled_f1=_control("shuffle", X, y, train_idx, test_idx, grid, n_shuffles, seed, C),
        rotated_f1=_control("rotation", X, y, train_idx, test_idx, grid, n_rotations, seed, C),
        positive=positive,
        n_train=train_idx.numel(),
        n_test=test_idx.numel(),
        name=name,
        notes=tuple(notes),
        **metrics,
    )


_METRICS = ("f1", "precision", "recall", "mcc", "roc_auc")


def _control(
    kind: Literal["shuffle", "rotation"],
    X: Tensor,
    y: Tensor,
    train: Tensor,
    test: Tensor,
    grid: tuple[int, ...],
    n: int,
    seed: int,
    C: float,
) -> Tensor:
    """Held-out F1 ``[repeat, k]`` of mean-difference probes under a control.

    ``"shuffle"``: training labels permuted (selection included), scored on the true test
    labels. ``"rotation"``: the neuron basis rotated by a random orthogonal matrix first.
    """
    out = torch.empty(n, len(grid))
    for r in range(n):
        gen = torch.Generator().manual_seed(seed * 1000 + (500 if kind == "rotation" else 0) + r)
        Xc, y_fit = X, y
        if kind == "shuffle":
            y_fit = y.clone()
            y_fit[train] = y[train][torch.randperm(train.numel(), generator=gen)]
        else:
            d = X.shape[1]
            q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
            Xc = (X - X[train].mean(0)) @ q  # centred, then rotated: (n, d)
        ranking = torch.argsort(
            neuron_scores(Xc[train], y_fit[train], "mean_diff"), descending=True, stable=True
        )
        for k_i, k in enumerate(grid):
            w, b = fit_l2(Xc[train][:, ranking[:k]][None], y_fit[train], C=C)
            out[r, k_i] = binary_metrics(Xc[test][:, ranking[:k]] @ w[0] + b[0], y[test])["f1"]
    return out
