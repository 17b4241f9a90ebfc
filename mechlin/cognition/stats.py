"""Honest statistics for cognition vs expression (Yan et al. 2024): what a reviewer would demand.

Pure functions on tensors (no model): the reproduction collects hidden states and per-item
correctness once, then calls these.

- ``disjoint_pool`` / ``assert_disjoint``: a fine-tuning pool shares no question with the sets a
  model is evaluated on. An item matches by id, or by its normalised question text:
  Unicode NFKC, case-folded, every character that is not a letter or digit dropped (so
  whitespace and punctuation variants such as ``"well-known"``, ``"Well known"`` and
  ``"wellknown"`` meet). ``match="question"`` (the default, conservative) compares the stem
  alone; ``match="question_choices"`` compares the stem plus the sorted normalised choice
  texts, so a generic stem ("Which of these is true?") with other choices is kept.
- ``crossfit_cognition``: the letter probe of ``probe_cognition`` (PCA, z-scores, one-vs-rest
  L2 logistic, prediction among the item's own letters), cross-fitted: items fall in
  ``folds`` folds stratified by answer letter, each is predicted by a probe fitted on the other
  folds (PCA and z-scores fitted there too), so every item gives an out-of-fold verdict at
  every layer. Cognition is the accuracy at a layer fixed *in advance*, with a percentile
  bootstrap interval over items; the best layer is chosen by nested CV (an inner CV on each
  outer fold's training items picks the layer the outer test items are scored at); a
  shuffled-label control (training labels permuted within each fold's training items) gives
  the accuracy of a probe that can know nothing.
- ``bootstrap_ci``, ``paired_delta`` (two phases on the same items: paired bootstrap and a
  sign-flip permutation test, which for 0/1 correctness is the exact two-sided sign test
  (McNemar) when enumerated), ``stratified_permutation_corr`` (a correlation over cells
  whose null keeps each stratum's values: only the pairing within strata is shuffled),
  ``cell_bootstrap`` (a correlation's interval from resampling items within cells).
- Views: ``pca_grid`` (the paper's per-layer PCA panels), ``umap_view``, ``curves_vs_step``.

Pitfalls this module exists for: reporting the maximum over layers of held-out accuracy (a
maximum over noisy estimates, optimistic on pure noise; ``CrossFit.max_acc`` is shown only
labelled so); choosing anything supervised (layer, features, ``C``) on the items it is scored
on; a correlation over (model, phase, dataset) cells that only says easy datasets are easy on
both axes (``stratified_permutation_corr`` with ``strata=dataset``); fine-tuning on test
questions. Unsupervised steps fitted on all items (a transductive PCA) do not bias accuracy on
labels they never see, but mechlin fits them on training folds anyway. The nested-CV interval
is conditional on the layers chosen (items resampled, selection not rerun).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from jaxtyping import Bool, Float, Int, Shaped
from torch import Tensor

from mechlin import viz
from mechlin._checks import Rule, checked
from mechlin.cognition.probes import _features, fit_ovr
from mechlin.datasets.mcq import LETTERS, MCQDataset, MCQItem
from mechlin.errors import ArgumentError, ArgumentTypeError, EmptyInputError, OutOfRangeError
from mechlin.results import Result

Match = Literal["question", "question_choices"]
Band = tuple[Tensor, ...]  # (value, lo, hi), each (step,)

_RULES = {
    "folds": Rule(low=2, integer=True, what="an integer >= 2"),
    "n_boot": Rule(low=1, integer=True, what="a positive integer (>= 1)"),
    "n_perm": Rule(low=1, integer=True, what="a positive integer (>= 1)"),
    "level": Rule(low=0, high=1, low_open=True, high_open=True, what="a fraction in (0, 1)"),
    "pca_dim": Rule(low=1, integer=True, what="a positive integer (>= 1) or None"),
    "layer": Rule(low=0, integer=True, what="a non-negative layer index"),
    "n_neighbors": Rule(low=2, integer=True, what="an integer >= 2"),
}


# ---------------------------------------------------------------- disjoint pools


@checked
def normalise_text(text: str) -> str:
    """NFKC, case-folded, letters and digits only (whitespace and punctuation dropped)."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def _text_key(item: MCQItem, match: str) -> str:
    stem = normalise_text(item.question)
    if match == "question":
        return stem
    return stem + "|" + "|".join(sorted(normalise_text(c) for c in item.choices))


@dataclass(frozen=True)
class DisjointReport(Result):
    """Which pool items were dropped for matching an evaluation item, and why."""

    _plottable: ClassVar[bool] = False

    pool: str
    match: str
    n_pool: int
    n_kept: int
    evals: tuple[str, ...]
    n_eval: tuple[int, ...]  # items in each evaluation set
    n_by_id: tuple[int, ...]  # pool items matching an item of that set by id
    n_by_text: tuple[int, ...]  # ... by normalised text (and not by id)
    dropped_ids: tuple[str, ...]
    matches: tuple[tuple[str, str, str, str], ...]  # (pool id, eval set, eval id, "id"/"text")

    def __post_init__(self) -> None:
        n = len(self.evals)
        if not len(self.n_eval) == len(self.n_by_id) == len(self.n_by_text) == n:
            raise ArgumentError("n_eval, n_by_id and n_by_text need one entry per eval set")
        if self.n_kept + len(self.dropped_ids) != self.n_pool:
            raise ArgumentError("n_kept plus the dropped items must make the pool")

    @property
    def n_dropped(self) -> int:
        return len(self.dropped_ids)

    def summary(self) -> str:
        lines = [
            f"Pool {self.pool!r}: {self.n_pool} items, {self.n_dropped} dropped, "
            f"{self.n_kept} kept (match: id or normalised {self.match.replace('_', ' + ')})"
        ]
        for name, n, a, b in zip(
            self.evals, self.n_eval, self.n_by_id, self.n_by_text, strict=True
        ):
            lines.append(f"  vs {name} ({n} items): {a} by id, {b} by text")
        return "\n".join(lines)

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(list(self.matches), columns=["pool_id", "eval", "eval_id", "how"])


def _check_sets(pool: object, evals: tuple[object, ...]) -> None:
    for what, ds in (("pool", pool), *((f"eval set {i}", e) for i, e in enumerate(evals))):
        if not isinstance(ds, MCQDataset):
            raise ArgumentTypeError(f"{what} must be an MCQDataset (load_mcq), not {type(ds)}")
    if not evals:
        raise EmptyInputError("pass at least one evaluation set to keep the pool disjoint from")


def _matches(
    pool: MCQDataset, evals: tuple[MCQDataset, ...], match: str
) -> tuple[list[tuple[str, str, str, str]], list[tuple[int, int]]]:
    found: list[tuple[str, str, str, str]] = []
    counts = []
    for ev in evals:
        by_id = {it.id: it.id for it in ev}
        by_text = {_text_key(it, match): it.id for it in ev}
        n_id = n_text = 0
        for it in pool:
            if it.id in by_id:
                found.append((it.id, ev.name, it.id, "id"))
                n_id += 1
            elif (key := _text_key(it, match)) in by_text:
                found.append((it.id, ev.name, by_text[key], "text"))
                n_text += 1
        counts.append((n_id, n_text))
    return found, counts


@checked
def disjoint_pool(
    pool: MCQDataset, *evals: MCQDataset, match: Match = "question"
) -> tuple[MCQDataset, DisjointReport]:
    """The pool without every item that matches an item of ``evals`` by id or normalised text.

    The kept items stay in pool order under the pool's name; the report counts the matches
    per evaluation set (an item matching two sets counts in both) and lists the dropped ids.
    """
    _check_sets(pool, evals)
    found, counts = _matches(pool, evals, match)
    dropped = {m[0] for m in found}
    keep = [i for i, it in enumerate(pool) if it.id not in dropped]
    report = DisjointReport(
        pool=pool.name,
        match=match,
        n_pool=len(pool),
        n_kept=len(keep),
        evals=tuple(ev.name for ev in evals),
        n_eval=tuple(len(ev) for ev in evals),
        n_by_id=tuple(c[0] for c in counts),
        n_by_text=tuple(c[1] for c in counts),
        dropped_ids=tuple(it.id for it in pool if it.id in dropped),
        matches=tuple(found),
    )
    return pool.subset(keep, name=pool.name), report


@checked
def assert_disjoint(pool: MCQDataset, *evals: MCQDataset, match: Match = "question") -> None:
    """Raise ``ArgumentError`` naming the first pool item that matches an evaluation item."""
    _check_sets(pool, evals)
    found, _ = _matches(pool, evals, match)
    if found:
        pool_id, name, eval_id, how = found[0]
        question = next(it.question for it in pool if it.id == pool_id)
        raise ArgumentError(
            f"pool {pool.name!r} is not disjoint from the evaluation sets: {len(found)} match(es), "
            f"first: pool item {pool_id!r} ({question[:60]!r}) matches {name!r} item "
            f"{eval_id!r} by {'id' if how == 'id' else 'normalised ' + match.replace('_', ' + ')}"
            "; drop them with disjoint_pool(pool, *evals)"
        )


# ---------------------------------------------------------------- bootstrap and permutations


def _counts(n: int, n_boot: int, rng: np.random.Generator) -> Tensor:
    """(n_boot, n) multiplicities of a bootstrap resample of n items, float64."""
    idx = rng.integers(n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    counts = np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n)
    return torch.from_numpy(counts.astype(np.float64))


def _real(values: Tensor, name: str) -> Tensor:
    if not isinstance(values, Tensor):
        raise ArgumentTypeError(f"{name} must be a tensor, not {type(values).__name__}")
    if values.dtype.is_complex:
        raise ArgumentTypeError(f"{name} must be real (bool, integer or float), not complex")
    out = values.detach().cpu().to(torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise ArgumentError(f"{name} holds NaN or inf values")
    return out


def _percentile(samples: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """Percentile interval over the last axis (NaN samples ignored)."""
    a = samples.numpy()
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(a, [tail, 100 - tail], axis=-1)
    return torch.from_numpy(np.asarray(lo)), torch.from_numpy(np.asarray(hi))


@checked(rules=_RULES)
def bootstrap_ci(
    correct: Shaped[Tensor, "*batch item"],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[Float[Tensor, "*batch"], Float[Tensor, "*batch"]]:
    """Percentile bootstrap interval (lo, hi) of the mean over the last axis (items).

    Every leading index is resampled with the same item draws (paired across layers).
    """
    x = _real(correct, "correct")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise EmptyInputError("correct needs at least one item (its last axis)")
    w = _counts(x.shape[-1], n_boot, np.random.default_rng(seed))  # (boot, item)
    means = x @ w.T / x.shape[-1]  # (*batch, boot)
    return _percentile(means, level)


@dataclass(frozen=True)
class PairedDelta(Result):
    """Mean per-item difference a - b on the same items, its interval and a permutation p."""

    _plottable: ClassVar[bool] = False

    delta: float
    lo: float
    hi: float
    p_value: float  # two-sided, sign-flip permutation (exact when 2^n_differ <= n_perm)
    n_items: int
    n_differ: int  # items where a and b differ
    exact: bool
    level: float

    def summary(self) -> str:
        how = "exact" if self.exact else "Monte Carlo"
        return (
            f"paired difference {self.delta:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}] "
            f"({self.level:.0%} paired bootstrap), p = {self.p_value:.3g} ({how} sign-flip), "
            f"{self.n_differ} of {self.n_items} items differ"
        )


@checked(rules=_RULES)
def paired_delta(
    a: Shaped[Tensor, " item"],
    b: Shaped[Tensor, " item"],
    *,
    n_boot: int = 1000,
    n_perm: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDelta:
    """Compare two phases (checkpoints, prompts) scored on the SAME items.

    The interval resamples items (each keeps its pair); the p-value flips the sign of each
    item's difference at random (null: a and b are exchangeable within an item). With at most
    ``log2(n_perm)`` differing items the flips are enumerated and p is exact; for 0/1
    correctness that is the two-sided exact sign test.
    """
    x, y = _real(a, "a"), _real(b, "b")
    if x.shape != y.shape:
        raise ArgumentError(
            f"a and b must score the same items: shapes {list(x.shape)}, {list(y.shape)}"
        )
    if not len(x):
        raise EmptyInputError("a and b hold no items")
    n = len(x)
    d = x - y  # (item,)
    rng = np.random.default_rng(seed)
    lo, hi = _percentile(d @ _counts(n, n_boot, rng).T / n, level)
    nz = d[d != 0]  # (differ,)
    m = len(nz)
    obs = abs(float(nz.sum()))
    exact = 2**m <= n_perm
    if m == 0:
        p = 1.0
    elif exact:
        bits = (torch.arange(2**m)[:, None] >> torch.arange(m)) & 1  # (2^m, m)
        sums = ((bits * 2 - 1).double() @ nz).abs()
        p = float((sums >= obs - 1e-9).double().mean())
    else:
        signs = torch.from_numpy(rng.choice([-1.0, 1.0], size=(n_perm, m)))
        hits = int(((signs @ nz).abs() >= obs - 1e-9).sum())
        p = (1 + hits) / (n_perm + 1)
    return PairedDelta(
        delta=float(d.mean()),
        lo=float(lo),
        hi=float(hi),
        p_value=min(1.0, p),
        n_items=n,
        n_differ=m,
        exact=bool(exact),
        level=float(level),
    )


@dataclass(frozen=True)
class StratifiedCorrelation(Result):
    """Pearson r over cells, tested by permuting y within strata."""

    _plottable: ClassVar[bool] = False

    r: float
    p_value: float  # two-sided; y permuted within each stratum
    lo: float  # bootstrap interval of r, cells resampled within strata
    hi: float
    p_unstratified: float  # y permuted over all cells (for contrast; not the test)
    r_within: float  # r of the within-stratum deviations (stratum means removed); NaN if none
    n_cells: int
    n_strata: int
    n_perm: int
    level: float

    def summary(self) -> str:
        return (
            f"Pearson r = {self.r:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}] over {self.n_cells} "
            f"cells in {self.n_strata} strata; p = {self.p_value:.3g} permuting within strata "
            f"(p = {self.p_unstratified:.3g} permuting all cells); within-stratum r = "
            f"{self.r_within:+.3f}"
        )


def _pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson r along the last axis (NaN where either side is constant)."""
    xc = x - x.mean(-1, keepdim=True)
    yc = y - y.mean(-1, keepdim=True)
    den = (xc.square().sum(-1) * yc.square().sum(-1)).sqrt()
    return torch.where(den > 1e-300, (xc * yc).sum(-1) / den, torch.nan)


def _strata_codes(strata: object, n: int) -> np.ndarray:
    items = strata.tolist() if isinstance(strata, Tensor) else strata
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ArgumentTypeError("strata must be a sequence (one label per cell) or a tensor")
    if len(items) != n:
        raise ArgumentError(f"strata has {len(items)} labels for {n} cells")
    codes: dict[Hashable, int] = {}
    return np.array([codes.setdefault(s, len(codes)) for s in items], dtype=np.int64)


def _permute_within(
    y: np.ndarray, codes: np.ndarray, n_perm: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_perm, n) copies of y, each permuted within the strata ``codes``."""
    base = np.argsort(codes, kind="stable")  # (n,) grouped by stratum, original order
    keys = rng.random((n_perm, len(y)))
    order = np.lexsort((keys, np.broadcast_to(codes, keys.shape)), axis=-1)  # (perm, n)
    out = np.empty((n_perm, len(y)))
    out[:, base] = y[order]
    return out


@checked(rules=_RULES)
def stratified_permutation_corr(
    x: Shaped[Tensor, " cell"],
    y: Shaped[Tensor, " cell"],
    strata: Sequence[Hashable] | Tensor,
    *,
    n_perm: int = 10_000,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> StratifiedCorrelation:
    """Pearson r of x and y over cells (e.g. (model, phase, dataset)); p by permuting y within
    each stratum (e.g. dataset), so differences between strata cannot make it significant.

    A stratum of one cell cannot be permuted: with only such strata p is 1.
    """
    xs, ys = _real(x, "x"), _real(y, "y")
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ArgumentError(
            f"x and y must be 1-d, one value per cell: {list(xs.shape)}, {list(ys.shape)}"
        )
    n = len(xs)
    if n < 3:
        raise EmptyInputError(f"a correlation needs at least 3 cells, got {n}")
    if float(xs.std()) == 0 or float(ys.std()) == 0:
        raise ArgumentError("x or y is constant over the cells: Pearson r is undefined")
    codes = _strata_codes(strata, n)
    rng = np.random.default_rng(seed)
    r = float(_pearson(xs, ys))

    def p_of(perms: np.ndarray) -> float:
        rp = _pearson(xs[None], torch.from_numpy(perms))
        return (1 + int((rp.abs() >= abs(r) - 1e-12).sum())) / (n_perm + 1)

    p = p_of(_permute_within(ys.numpy(), codes, n_perm, rng))
    p_all = p_of(_permute_within(ys.numpy(), np.zeros(n, dtype=np.int64), n_perm, rng))
    # bootstrap: cells resampled within strata
    cols = []
    for s in range(int(codes.max()) + 1):
        members = np.flatnonzero(codes == s)
        cols.append(members[rng.integers(len(members), size=(n_boot, len(members)))])
    idx = torch.from_numpy(np.concatenate(cols, axis=1))  # (boot, n)
    lo, hi = _percentile(_pearson(xs[idx], ys[idx]), level)
    # within-stratum deviations
    onehot = torch.from_numpy(np.eye(int(codes.max()) + 1)[codes])  # (n, strata)
    means = onehot / onehot.sum(0)  # (n, strata)
    xw, yw = xs - onehot @ (means.T @ xs), ys - onehot @ (means.T @ ys)
    return StratifiedCorrelation(
        r=r,
        p_value=min(1.0, p),
        lo=float(lo),
        hi=float(hi),
        p_unstratified=min(1.0, p_all),
        r_within=float(_pearson(xw, yw)),
        n_cells=n,
        n_strata=int(codes.max()) + 1,
        n_perm=n_perm,
        level=float(level),
    )


@dataclass(frozen=True)
class CellBootstrap(Result):
    """Correlation of two per-cell accuracies with an interval from resampling items in cells."""

    _plottable: ClassVar[bool] = False

    r: float
    lo: float
    hi: float
    n_cells: int
    n_boot: int
    level: float


@checked(rules=_RULES)
def cell_bootstrap(
    cognition: Sequence[Tensor],
    expression: Sequence[Tensor],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> CellBootstrap:
    """Pearson r over cells of mean cognition vs mean expression correctness; its interval
    resamples each cell's items (the same draw for both sides: they score the same items)."""
    if len(cognition) != len(expression):
        raise ArgumentError(
            f"{len(cognition)} cognition cells but {len(expression)} expression cells"
        )
    if len(cognition) < 3:
        raise EmptyInputError(f"a correlation needs at least 3 cells, got {len(cognition)}")
    rng = np.random.default_rng(seed)
    cx, ex, bx, by = [], [], [], []
    for i, (c, e) in enumerate(zip(cognition, expression, strict=True)):
        c, e = _real(c, f"cognition[{i}]"), _real(e, f"expression[{i}]")
        if c.ndim != 1 or c.shape != e.shape or not len(c):
            raise ArgumentError(
                f"cell {i}: cognition and expression need one value per item of the same items, "
                f"got shapes {list(c.shape)} and {list(e.shape)}"
            )
        w = _counts(len(c), n_boot, rng)  # (boot, item)
        cx.append(c.mean())
        ex.append(e.mean())
        bx.append(w @ c / len(c))
        by.append(w @ e / len(e))
    r = float(_pearson(torch.stack(cx), torch.stack(ex)))
    lo, hi = _percentile(_pearson(torch.stack(bx, 1), torch.stack(by, 1)), level)
    return CellBootstrap(
        r=r, lo=float(lo), hi=float(hi), n_cells=len(cx), n_boot=n_boot, level=float(level)
    )


# ---------------------------------------------------------------- cross-fitted cognition


@checked(rules=_RULES)
def stratified_folds(
    labels: Int[Tensor, " item"], *, folds: int = 5, seed: int = 0
) -> Int[Tensor, " item"]:
    """Seeded fold of each item; each label's items spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    order = np.lexsort((rng.random(len(y)), y))  # grouped by label, random within
    fold = np.empty(len(y), dtype=np.int64)
    fold[order] = (np.arange(len(y)) + int(rng.integers(folds))) % folds
    return torch.from_numpy(fold)


def _out_of_fold(
    X: Tensor,  # (layer, item, d)
    labels: Tensor,  # (fold, item): the labels the probe of fold f is fitted on
    answers: Tensor,  # (item,)
    n_choices: Tensor,  # (item,)
    fold_of: Tensor,  # (item,)
    *,
    pca_dim: int | None,
    C: float,
) -> tuple[Tensor, int]:
    """(layer, item) out-of-fold correctness, and the smallest PCA width used."""
    L, n, _ = X.shape
    n_cls = int(n_choices.max())
    valid = torch.arange(n_cls)[None] < n_choices[:, None]  # (item, class)
    correct = torch.zeros(L, n, dtype=torch.bool)
    k_min = X.shape[-1]
    for f in range(labels.shape[0]):
        test = (fold_of == f).nonzero().flatten()
        train = (fold_of != f).nonzero().flatten()
        if not len(test):
            continue
        rows = torch.cat([train, test])
        F, k = _features(X[:, rows], torch.arange(len(train)), pca_dim)  # (layer, row, k)
        k_min = min(k_min, k or X.shape[-1])
        W, B = fit_ovr(F[:, : len(train)], labels[f, train], n_cls, C=C)
        logits = torch.einsum("lrk,clk->lrc", F[:, len(train) :], W) + B.T[:, None]
        logits = logits.masked_fill(~valid[test][None], -math.inf)  # (layer, test, class)
        correct[:, test] = logits.argmax(-1) == answers[test][None]
    return correct, k_min


@dataclass(frozen=True)
class CrossFit(Result):
    """Cross-fitted letter-probe accuracy per layer: fixed layer, nested best layer, control."""

    layers: tuple[int, ...]
    layer: int  # fixed in advance
    folds: int
    pca_dim: int  # smallest PCA width a fold used (d_model: raw states)
    C: float
    seed: int
    level: float
    fold_of: Int[Tensor, " item"]
    correct: Bool[Tensor, "layer item"]  # out-of-fold verdict of every item at every layer
    shuffled_correct: Bool[Tensor, "layer item"]  # probe fitted on permuted training labels
    acc: Float[Tensor, " layer"]
    acc_lo: Float[Tensor, " layer"]
    acc_hi: Float[Tensor, " layer"]
    shuffled_acc: Float[Tensor, " layer"]
    shuffled_lo: Float[Tensor, " layer"]
    shuffled_hi: Float[Tensor, " layer"]
    chance: float  # mean of 1 / n_choices
    nested_correct: Bool[Tensor, " item"] | None  # each item scored at its fold's chosen layer
    nested_acc: float  # NaN when not nested
    nested_lo: float
    nested_hi: float
    chosen_layers: tuple[int, ...]  # per outer fold; () when not nested

    def __post_init__(self) -> None:
        L, n = len(self.layers), self.fold_of.shape[0]
        if self.layer not in self.layers:
            raise ArgumentError(f"layer {self.layer} is not among the layers")
        for name in ("correct", "shuffled_correct"):
            if getattr(self, name).shape != (L, n):
                raise ArgumentError(f"{name} must be (layer, item) = ({L}, {n})")
        for name in ("acc", "acc_lo", "acc_hi", "shuffled_acc", "shuffled_lo", "shuffled_hi"):
            if getattr(self, name).shape != (L,):
                raise ArgumentError(f"{name} must have one entry per layer ({L})")
        if self.nested_correct is not None and self.nested_correct.shape != (n,):
            raise ArgumentError(f"nested_correct must have one entry per item ({n})")
        if any(c not in self.layers for c in self.chosen_layers):
            raise ArgumentError("chosen_layers must be among the layers")

    @property
    def n_items(self) -> int:
        return int(self.fold_of.shape[0])

    @property
    def cognition(self) -> float:
        """Accuracy at the layer fixed in advance."""
        return float(self.acc[self.layers.index(self.layer)])

    @property
    def cognition_ci(self) -> tuple[float, float]:
        i = self.layers.index(self.layer)
        return float(self.acc_lo[i]), float(self.acc_hi[i])

    @property
    def max_acc(self) -> tuple[float, int]:
        """(accuracy, layer) of the maximum over layers: optimistic, not an estimate."""
        i = int(self.acc.argmax())
        return float(self.acc[i]), self.layers[i]

    def summary(self) -> str:
        i = self.layers.index(self.layer)
        lo, hi = self.cognition_ci
        width = f"PCA {self.pca_dim}" if self.pca_dim else "raw states"
        lines = [
            f"Cross-fitted cognition: {self.n_items} items, {self.folds} stratified folds, "
            f"{len(self.layers)} layers, {width}, C={self.C:g}; {self.level:.0%} bootstrap "
            "intervals over items",
            f"  layer {self.layer} (fixed in advance): {self.cognition:.3f} [{lo:.3f}, {hi:.3f}]",
        ]
        if self.chosen_layers:
            lines.append(
                f"  best layer by nested CV: {self.nested_acc:.3f} [{self.nested_lo:.3f}, "
                f"{self.nested_hi:.3f}], layers chosen per fold {list(self.chosen_layers)}"
            )
        m, at = self.max_acc
        lines += [
            f"  shuffled labels at layer {self.layer}: {float(self.shuffled_acc[i]):.3f} "
            f"[{float(self.shuffled_lo[i]):.3f}, {float(self.shuffled_hi[i]):.3f}]; chance "
            f"{self.chance:.3f}",
            f"  max over layers {m:.3f} at layer {at} (a maximum over noisy layers: optimistic)",
        ]
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        fig, ax = viz.axes(ax, figsize=(6.5, 3.8))
        x = list(self.layers)
        ax.fill_between(x, self.acc_lo.tolist(), self.acc_hi.tolist(), alpha=0.25)
        ax.plot(x, self.acc.tolist(), "o-", label="cross-fitted probe")
        ax.fill_between(
            x, self.shuffled_lo.tolist(), self.shuffled_hi.tolist(), color="grey", alpha=0.2
        )
        ax.plot(x, self.shuffled_acc.tolist(), "x:", color="grey", label="shuffled labels")
        ax.axhline(self.chance, color="black", lw=0.8, ls="--", label="chance")
        ax.axvline(
            self.layer, color="tab:red", lw=0.8, alpha=0.6, label=f"fixed layer {self.layer}"
        )
        if self.chosen_layers:
            at = max(set(self.chosen_layers), key=self.chosen_layers.count)
            ax.errorbar(
                [at],
                [self.nested_acc],
                yerr=[[self.nested_acc - self.nested_lo], [self.nested_hi - self.nested_acc]],
                fmt="D",
                color="tab:green",
                capsize=3,
                label="nested CV",
            )
        ax.set_xlabel("layer")
        ax.set_ylabel("out-of-fold accuracy")
        ax.legend(fontsize=7)
        return fig

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(
            dict(
                layer=list(self.layers),
                acc=self.acc.tolist(),
                acc_lo=self.acc_lo.tolist(),
                acc_hi=self.acc_hi.tolist(),
                shuffled_acc=self.shuffled_acc.tolist(),
                shuffled_lo=self.shuffled_lo.tolist(),
                shuffled_hi=self.shuffled_hi.tolist(),
                chance=self.chance,
            )
        )


@checked(rules=_RULES)
def crossfit_cognition(
    X: Float[Tensor, "layer item d_model"],
    answers: Int[Tensor, " item"],
    n_choices: Int[Tensor, " item"],
    *,
    layer: int,
    folds: int = 5,
    pca_dim: int | None = 64,
    C: float | int = 1.0,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    nested: bool = True,
) -> CrossFit:
    """Cross-fitted letter probe at every layer (see the module docstring).

    ``X`` holds one row per item (the letter prompt's last token) at every layer; ``layer``
    indexes its first axis and must be fixed before looking at the results. ``pca_dim=None``
    probes the z-scored raw states.
    """
    if X.ndim != 3 or answers.shape != (X.shape[1],) or n_choices.shape != answers.shape:
        raise ArgumentError(
            f"X must be (layer, item, d_model) with answers and n_choices (item,): got "
            f"{list(X.shape)}, {list(answers.shape)}, {list(n_choices.shape)}"
        )
    L, n, _ = X.shape
    if not bool(torch.isfinite(X).all()):
        raise ArgumentError("X holds NaN or inf values")
    if not layer < L:
        raise OutOfRangeError(f"layer {layer} is out of range: X has {L} layers (0..{L - 1})")
    if bool((n_choices < 2).any()) or bool((n_choices > len(LETTERS)).any()):
        raise ArgumentError(f"n_choices must lie in [2, {len(LETTERS)}]")
    if bool((answers < 0).any()) or bool((answers >= n_choices).any()):
        bad = int(((answers < 0) | (answers >= n_choices)).nonzero()[0, 0])
        raise OutOfRangeError(
            f"item {bad}: answer {int(answers[bad])} is not one of its "
            f"{int(n_choices[bad])} letters"
        )
    if n < 2 * folds:
        raise EmptyInputError(f"{n} items are too few for {folds} folds (need >= {2 * folds})")
    X = X.detach().cpu()
    answers, n_choices = answers.cpu().long(), n_choices.cpu().long()
    fold_of = stratified_folds(answers, folds=folds, seed=seed)
    same = answers.expand(folds, n)  # (fold, item)
    correct, k = _out_of_fold(X, same, answers, n_choices, fold_of, pca_dim=pca_dim, C=float(C))

    rng = np.random.default_rng(seed + 1)
    shuffled = answers.repeat(folds, 1)  # (fold, item)
    for f in range(folds):
        train = (fold_of != f).nonzero().flatten()
        shuffled[f, train] = answers[train][torch.from_numpy(rng.permutation(len(train)))]
    shuffled_correct, _ = _out_of_fold(
        X, shuffled, answers, n_choices, fold_of, pca_dim=pca_dim, C=float(C)
    )

    nested_correct, chosen = None, []
    if nested:
        nested_correct = torch.zeros(n, dtype=torch.bool)
        for f in range(folds):
            tr = (fold_of != f).nonzero().flatten()
            inner_fold = stratified_folds(answers[tr], folds=folds, seed=seed + 2 + f)
            inner, _ = _out_of_fold(
                X[:, tr],
                answers[tr].expand(folds, len(tr)),
                answers[tr],
                n_choices[tr],
                inner_fold,
                pca_dim=pca_dim,
                C=float(C),
            )
            best = int(inner.double().mean(1).argmax())  # first of ties: the shallowest
            chosen.append(best)
            te = fold_of == f
            nested_correct[te] = correct[best, te]

    stack = [correct, shuffled_correct] + (
        [nested_correct[None]] if nested_correct is not None else []
    )
    lo, hi = bootstrap_ci(torch.cat(stack).double(), n_boot=n_boot, seed=seed, level=level)
    acc = correct.double().mean(1)
    nested_acc = float(nested_correct.double().mean()) if nested_correct is not None else math.nan
    return CrossFit(
        layers=tuple(range(L)),
        layer=layer,
        folds=folds,
        pca_dim=int(k),
        C=float(C),
        seed=seed,
        level=float(level),
        fold_of=fold_of,
        correct=correct,
        shuffled_correct=shuffled_correct,
        acc=acc.float(),
        acc_lo=lo[:L].float(),
        acc_hi=hi[:L].float(),
        shuffled_acc=shuffled_correct.double().mean(1).float(),
        shuffled_lo=lo[L : 2 * L].float(),
        shuffled_hi=hi[L : 2 * L].float(),
        chance=float((1.0 / n_choices.double()).mean()),
        nested_correct=nested_correct,
        nested_acc=nested_acc,
        nested_lo=float(lo[2 * L]) if nested else math.nan,
        nested_hi=float(hi[2 * L]) if nested else math.nan,
        chosen_layers=tuple(chosen),
    )


# ---------------------------------------------------------------- views


def _scatter_by_label(ax: Any, pts: Tensor, labels: Tensor, *, size: float = 8.0) -> None:
    for c in sorted(set(labels.tolist())):
        sel = labels == c
        ax.scatter(
            pts[sel, 0].tolist(),
            pts[sel, 1].tolist(),
            s=size,
            alpha=0.7,
            color=f"C{c % 10}",
            label=LETTERS[c] if 0 <= c < len(LETTERS) else str(c),
        )


@checked
def pca_grid(
    states: Mapping[tuple[str, str], Tensor],
    labels: Mapping[str, Tensor],
    *,
    layers: Sequence[int] | None = None,
) -> Any:
    """Per-layer PCA panels (Yan et al.'s figures): rows (dataset, phase), columns layers.

    ``states[(dataset, phase)]`` is (layer, item, d_model); ``labels[dataset]`` the right letter
    of each item. Each panel fits its own 2-d PCA (a plain SVD of the centred states), so axes
    are not comparable across panels. ``layers`` defaults to up to 4 spread over the depth.
    """
    if not states:
        raise EmptyInputError("states is empty: pass {(dataset, phase): (layer, item, d)} tensors")
    for key, t in states.items():
        if not isinstance(key, tuple) or len(key) != 2:
            raise ArgumentTypeError(f"states keys must be (dataset, phase) pairs, got {key!r}")
        if not isinstance(t, Tensor) or t.ndim != 3:
            raise ArgumentTypeError(f"states[{key!r}] must be a (layer, item, d) tensor")
        if key[0] not in labels:
            raise ArgumentError(f"no labels for dataset {key[0]!r}; labels has {sorted(labels)}")
        if labels[key[0]].shape != (t.shape[1],):
            raise ArgumentError(f"labels[{key[0]!r}] needs one letter per item ({t.shape[1]})")
    n_layers = min(t.shape[0] for t in states.values())
    if layers is None:
        layers = sorted({round(v) for v in np.linspace(0, n_layers - 1, min(4, n_layers))})
    bad = [la for la in layers if not 0 <= la < n_layers]
    if bad or not layers:
        raise OutOfRangeError(f"layers {bad or list(layers)} must lie in [0, {n_layers})")
    keys = list(states)
    fig, axes = viz.figure(len(keys), len(layers), figsize=(2.6 * len(layers), 2.4 * len(keys)))
    for r, key in enumerate(keys):
        for c, la in enumerate(layers):
            Z = states[key][la].detach().cpu().double()  # (item, d)
            Z = Z - Z.mean(0)
            _, s, vh = torch.linalg.svd(Z, full_matrices=False)
            pts = Z @ vh[:2].T  # (item, 2)
            share = float((s[:2] ** 2).sum() / (s**2).sum().clamp(min=1e-300))
            ax = axes[r, c]
            _scatter_by_label(ax, pts, labels[key[0]].cpu(), size=6.0)
            ax.set_title(f"{key[0]} / {key[1]}, layer {la} ({share:.0%})", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].legend(fontsize=6, title="right letter", title_fontsize=6.0)
    fig.tight_layout()
    return fig


@checked(rules=_RULES)
def umap_view(
    states: Float[Tensor, "item d_model"],
    labels: Int[Tensor, " item"],
    *,
    seed: int = 0,
    n_neighbors: int = 15,
    ax: Any = None,
    title: str = "",
) -> Any:
    """A 2-d UMAP of one layer's states coloured by the right letter (umap-learn).

    For looking only: UMAP distorts distances and densities and depends on ``n_neighbors``
    and the seed, so no number is read off it; the probes measure. ``n_neighbors`` (15, fit for
    a few hundred points) is capped below the number of items; ``random_state=seed`` makes the
    picture reproducible (and single-threaded).
    """
    import umap  # noqa: PLC0415  (slow import, numba compiles on first use)

    n = states.shape[0]
    if labels.shape != (n,):
        raise ArgumentError(f"labels needs one letter per item ({n})")
    if n < 4:
        raise EmptyInputError(f"UMAP needs at least 4 items, got {n}")
    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, n - 1), min_dist=0.1, random_state=seed, n_jobs=1
    )
    pts = torch.from_numpy(reducer.fit_transform(states.detach().cpu().double().numpy()))
    fig, ax = viz.axes(ax, figsize=(4.5, 4))
    _scatter_by_label(ax, pts, labels.cpu())
    ax.set_title(title or f"UMAP (n_neighbors={min(n_neighbors, n - 1)}, seed {seed})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, title="right letter", title_fontsize=7)
    return fig


def _band(value: object, name: str, n: int) -> tuple[list[float], list[float], list[float]]:
    if not isinstance(value, tuple | list) or len(value) != 3:
        raise ArgumentTypeError(f"{name} must be (value, lo, hi), each one entry per step")
    out = []
    for part in value:
        t = torch.as_tensor(part, dtype=torch.float64).flatten()
        if t.shape != (n,):
            raise ArgumentError(f"{name} needs {n} values (one per step), got {list(t.shape)}")
        out.append(t.tolist())
    return out[0], out[1], out[2]


@checked
def curves_vs_step(
    steps: Sequence[int | float] | Tensor,
    cognition: Band,
    expression: Mapping[str, Band],
    *,
    chance: float | None = None,
    ax: Any = None,
    xlabel: str = "training step",
    title: str = "",
) -> Any:
    """Cognition and expression scores through training, each with its interval band.

    ``cognition`` is (value, lo, hi) per step; ``expression`` maps a metric name to the same.
    """
    xs = torch.as_tensor(steps, dtype=torch.float64).flatten().tolist()
    if not xs:
        raise EmptyInputError("steps is empty")
    fig, ax = viz.axes(ax, figsize=(6, 3.8))
    v, lo, hi = _band(cognition, "cognition", len(xs))
    ax.fill_between(xs, lo, hi, color="tab:blue", alpha=0.2)
    ax.plot(xs, v, "o-", color="tab:blue", lw=2, label="cognition (probe)")
    for i, (metric, band) in enumerate(expression.items()):
        v, lo, hi = _band(band, f"expression[{metric!r}]", len(xs))
        color = f"C{(i + 1) % 10}"
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15)
        ax.plot(xs, v, "s--", color=color, label=metric)
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    return fig
