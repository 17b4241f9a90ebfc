"""Adaptive causal tracing: screen every cell cheaply, restore few exactly.

Exact causal tracing costs one restored run per (layer, position) cell; attribution patching
(``mechlin.recall.attribution``) estimates every cell at once, and errs in known ways (a
saturated softmax, attention patterns that a restoration changes non-linearly, the first
layers). ``adaptive_trace`` therefore screens: it restores the cells the estimate ranks highest
on a few of the noise samples (exact for those samples, far better ranked than by the
estimate), then restores exactly, with the same engine and the same noise as ``causal_trace``,
the cells the screen ranks highest plus a stratified random sample of the others, and reports
per cell whether its score is exact, screened or estimated, and the estimate's error on the
random sample. The exact cells of an adaptive run equal the cells of ``causal_trace`` with the
same arguments. Which cells are restored, on which noise samples and in what order is the
policy of ``mechlin.recall.adaptive_policy``, run here against the trace's own engine.

Defaults that are ours, not a paper's: ``budget=0.1`` (share of cells restored exactly),
``check=0.25`` (share of that budget spent on the random sample), the screen by kind
(``SCREEN_DEFAULTS``: 0.3 of the cells on 1 noise sample for the residual stream and 2 for the
attention windows; 0.4 on 2 samples, one layer in 3, for the MLP windows, which restore at
most 24 cells exactly; re-screened near the cut), ``linearize="logprob"`` for the probability
metric,
``rounds=1`` (one ranking; more rounds raise the neighbours of strong exact cells),
``stop_below=None``. They were chosen on the known facts of known_1000 for both bundled models
(``benchmarks/adaptive_trace.py`` measures them against the exact trace).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mechlin import viz
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.errors import ArgumentError
from mechlin.recall._engines import Kind, Metric
from mechlin.recall.adaptive_policy import (
    _check_refine,
    _n_cells,
    _plan_scores,
    _Restorer,
    _run_policy,
    default_linearize,
    screen_for,
)
from mechlin.recall.attribution import Linearize, _check_linearize, estimate_grid
from mechlin.recall.tracing import CausalTrace, prepare_trace


@dataclass(frozen=True)
class AdaptiveTrace(CausalTrace):
    """A causal trace whose cells are exact where restored, screened or estimated elsewhere.

    Each cell's score is, in order of precedence: exact (``exact``: restored on every noise
    sample, equal to ``causal_trace``'s cell), screened (``screened``: restored on the first
    ``screen_samples`` noise samples only, more where ``refine`` re-screened it; the score is
    the corrupted score plus the indirect effect on those samples), inferred (``inferred``: a
    cell the screen's stride skipped, scored by the mean indirect effect of the nearest
    screened cells above and below it in its column), or the attribution estimate
    (``estimate`` holds it for every cell). ``samples`` counts the noise samples behind each
    score (0: inferred or estimated). ``checked`` marks the stratified random sample restored
    to measure the estimate's error (rank correlation and errors of the estimated indirect
    effects against the exact ones on that sample). ``work`` is the share of the exact trace's
    restorations (cell x noise sample) that the run did.
    """

    estimate: Tensor | None = None  # (layer, pos) estimated scores of every cell
    exact: Tensor | None = None  # (layer, pos) bool: restored exactly
    checked: Tensor | None = None  # (layer, pos) bool: restored as part of the random sample
    screened: Tensor | None = None  # (layer, pos) bool: restored on the screen's noise samples
    inferred: Tensor | None = None  # (layer, pos) bool: skipped by the stride, from neighbours
    restored_round: Tensor | None = None  # (layer, pos) round of a ranked restoration, 0: none
    budget: int = 0  # cells the run could restore exactly
    screen_samples: int = 0  # noise samples of the screen (0: no screen)
    samples: Tensor | None = None  # (layer, pos) noise samples behind each score (0: estimated)
    refine: tuple[tuple[float, float], ...] = ()  # the refinement stages (adaptive_trace)
    screen_stride: int = 1  # the screen restored every screen_stride-th layer of the grid
    linearize: str = "metric"  # how the estimate linearises: "metric" or "logprob"
    work: float = 0.0  # share of the exact trace's (cell, noise sample) restorations done
    rank_correlation: float | None = None  # Spearman, estimate vs exact IE, checked cells
    max_error: float | None = None  # max |estimated - exact| IE on the checked cells
    mean_abs_error: float | None = None
    stopped_early: bool = False  # the stop_below rule ended the ranked restorations

    def __post_init__(self) -> None:
        super().__post_init__()
        shape = tuple(self.scores.shape)
        for name in ("estimate", "exact", "checked", "screened", "restored_round"):
            value = getattr(self, name)
            if value is None or tuple(value.shape) != shape:
                raise ArgumentError(f"{name} must be a tensor of shape {shape}, not {value!r}")
        if self.inferred is not None and tuple(self.inferred.shape) != shape:
            raise ArgumentError(f"inferred must be None or a tensor of shape {shape}")

    @property
    def n_exact(self) -> int:
        assert self.exact is not None
        return int(self.exact.sum())

    @property
    def n_screened(self) -> int:
        assert self.screened is not None
        return int(self.screened.sum())

    @property
    def n_inferred(self) -> int:
        """Cells scored from their screened neighbours (none in traces saved before strides)."""
        if self.inferred is None:
            return 0
        assert self.exact is not None
        return int((self.inferred & ~self.exact).sum())

    def summary(self) -> str:
        n = self.scores.numel()
        lines = [
            f"adaptive trace: {self.n_exact} of {n} cells restored exactly "
            f"({self.n_exact / n:.0%}; budget {self.budget}"
            + (", stopped early by the threshold" if self.stopped_early else "")
            + ")",
            (
                f"screen: {self.n_screened} cells restored on {self.screen_samples} of "
                f"{self.n_samples} noise samples"
                if self.screen_samples
                else f"no screen (it needs several noise samples; this run has {self.n_samples})"
                if self.n_samples < 2
                else "no screen"
            )
            + (
                f" on one layer in {self.screen_stride} of the grid, {self.n_inferred} cells "
                "between them scored by their screened neighbours' mean"
                if self.screen_stride > 1 and self.screen_samples
                else ""
            )
            + (
                f" ({len(self.refine)} refinement stage{'s' * (len(self.refine) > 1)} near the "
                f"cut, up to {min(self.n_samples, self.screen_samples * (len(self.refine) + 1))} "
                "samples)"
                if self.refine and self.screen_samples
                else ""
            )
            + f"; the other cells estimated by attribution patching (linearised in "
            f"{self.linearize}); {self.work:.0%} of the exact trace's restorations",
        ]
        if self.rank_correlation is not None:
            assert self.checked is not None
            lines.append(
                f"estimate on {int(self.checked.sum())} randomly sampled cells: Spearman "
                f"{self.rank_correlation:.3f}, max error {self.max_error:.4f}, mean abs "
                f"error {self.mean_abs_error:.4f} ({self.metric})"
            )
        return "\n".join([*lines, super().summary()])

    def plot(self, ax: Any = None) -> Any:
        """The trace's heatmap, with the exactly restored cells outlined."""
        fig = super().plot(ax)
        ax = fig.axes[0]
        assert self.exact is not None and self.checked is not None
        ranked = torch.nonzero(self.exact & ~self.checked).tolist()
        viz.outline_cells(ax, [(i, j) for i, j in ranked], "black")
        viz.outline_cells(
            ax, [(i, j) for i, j in torch.nonzero(self.checked).tolist()], "tab:orange"
        )
        ax.set_title(
            f"Restoring state: {self.answer!r}; outlined exact ({self.n_exact}), "
            "orange = random check",
            fontsize=9,
        )
        return fig

    def to_frame(self) -> Any:
        frame = super().to_frame()
        assert self.exact is not None and self.estimate is not None and self.checked is not None
        assert self.screened is not None
        frame["exact"] = self.exact.reshape(-1).tolist()
        frame["screened"] = self.screened.reshape(-1).tolist()
        if self.inferred is not None:
            frame["inferred"] = self.inferred.reshape(-1).tolist()
        if self.samples is not None:
            frame["samples"] = self.samples.reshape(-1).tolist()
        frame["checked"] = self.checked.reshape(-1).tolist()
        frame["estimate"] = self.estimate.reshape(-1).tolist()
        return frame


def _spearman(a: Tensor, b: Tensor) -> float | None:
    if a.numel() < 3 or float(a.std()) == 0 or float(b.std()) == 0:
        return None
    from scipy.stats import spearmanr  # noqa: PLC0415  (scipy is slow to import)

    return float(spearmanr(a.numpy(), b.numpy()).statistic)


@checked
def adaptive_trace(
    model: Model,
    prompt: str,
    subject: str,
    *,
    budget: float | int = 0.1,
    max_exact: int | None = None,
    check: float = 0.25,
    screen: float | int | None = None,
    screen_samples: int | None = None,
    refine: Sequence[tuple[float, float]] | None = None,
    screen_stride: int | None = None,
    linearize: Linearize | None = None,
    stop_below: float | None = None,
    rounds: int = 1,
    answer: str | None = None,
    kind: Kind = "resid",
    window: int = 10,
    noise: Literal["3sigma"] | float = "3sigma",
    n_samples: int = 10,
    seed: int = 0,
    corrupted_prompt: str | None = None,
    metric: Metric = "prob",
    positions: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    contrast: str | None = None,
    memory_budget: int = 1 << 30,
    method: Literal["auto", "replay", "packed"] = "auto",
) -> AdaptiveTrace:
    """Causal tracing that restores exactly only the cells most likely to matter.

    1. Estimate every cell by attribution patching (``attribution_patch``).
    2. Screen: restore the ``screen`` cells the estimate ranks highest on ``screen_samples``
       of the ``n_samples`` noise samples only. Their indirect effect on those samples is
       exact for those samples, and ranks them far better than the first-order estimate.
       With ``screen_stride``, only one layer in that many is screened and the cells
       between take their screened neighbours' mean. With ``refine``, the screened cells
       ranked near the cut are screened again on more samples, stage by stage, and ranked
       again.
    3. Restore exactly (every noise sample; the screened samples are not run again), with
       ``causal_trace``'s engine and noise, the ``budget`` cells of highest priority in
       ``rounds`` (priority: the screened effect where screened, else the estimate, raised to
       the exact effect of a restored neighbour), and a stratified random sample of the others
       (one cell from each of equal strata of the estimate's ranking) to measure the
       estimate's error.
    4. Report exact scores where restored on every sample, the screened score where screened,
       the estimate elsewhere (``AdaptiveTrace``: ``exact``, ``screened``).

    Args:
        budget: cells restored exactly: a share of the grid (float in (0, 1], rounded down
            to whole cells, at least one) or a number of cells (int), the random sample
            included. Ours: 0.1.
        max_exact: at most this many cells restored exactly, whatever the grid's size (the
            budget's cells, the random sample included); 0: no cap. The strong cells of a
            trace are a handful however long the prompt, so a share of a long prompt's grid
            restores more weak cells. ``None``: by kind (``SCREEN_DEFAULTS``, ours): 24 for
            ``"mlp"`` (on facts 126-150 of known_1000, replayed on their exact traces: 24 cells
            instead of 10% of smollm2-135m's grids, 240-450 cells, found recall@10 0.94
            against 0.96 for a fifth less restoration cost, 13.1% of the exact trace's
            against 16.4%; gemma-3-270m's grids are smaller and seldom capped: 0.90 both, at
            13.8% against 14.1%), no cap for the other kinds.
        check: share of ``budget`` spent on the random sample (0 for none). Ours: 0.25.
        screen: cells screened on a few noise samples: a share of the grid or a number
            (0: no screen, rank by the estimate alone). Only cells the corruption reaches are
            screened. Without noise samples to split (``corrupted_prompt``, or
            ``screen_samples >= n_samples``) there is no screen. ``None``: by kind
            (``SCREEN_DEFAULTS``, ours): 0.3, and 0.4 for ``"mlp"`` (its stride restores about
            half of them).
        screen_samples: noise samples the screen restores (the first ones; they are iid).
            ``None``: by kind, 1 for ``"resid"`` and 2 for the windows (``SCREEN_DEFAULTS``,
            ours; on known facts of both bundled models, 2 samples found more of the MLP
            windows' exact top 10 than 1 at the same cost, while the residual stream's top 10
            is found nearly as well from 1 sample refined near the cut - recall@10 0.95-0.96
            against 0.97-0.98 - for two thirds of the restoration time:
            ``benchmarks/adaptive_policies.py``, ``benchmarks/adaptive_trace.py``).
        refine: stages of re-screening near the cut. Stage k, given as (below, above), takes
            the screened cells ranked from ``below`` x n above the cut to ``above`` x n below
            it (n: the cells the budget ranks, the random sample apart) and restores them on
            the first k x ``screen_samples`` noise samples; their priority becomes the effect
            on those samples. ``()``: none. ``None``: by kind (``SCREEN_DEFAULTS``, ours):
            ``((0.5, 1.0),)`` for ``"resid"`` (with its 1-sample screen: a second sample for
            the cells from n/2 above the cut to n below it), the same for ``"mlp"`` (its
            screen: 2 samples, then 4 near the cut), ``()`` for ``"attn"`` (README status;
            ``benchmarks/adaptive_policies.py --refine`` replays others).
        screen_stride: the screen restores only the cells at one layer in ``screen_stride``
            of the grid (and at the last); a screened-for cell between takes the mean
            indirect effect of the nearest screened cells above and below it in its column
            (within the stride), as its priority and, unless restored later, as its score
            (``AdaptiveTrace.inferred``). A window of 10 sublayers shares all but a few of them
            with its neighbours, so their effects are close. The refinement restores an
            inferred cell near the cut like a screened one. ``None``: by kind
            (``SCREEN_DEFAULTS``, ours): 3 for ``"mlp"``, else 1 (no stride). On facts 51-75
            of known_1000, replayed on their exact traces, the MLP windows' stride 3 with
            screen 0.4 and one refinement stage found recall@10 0.95 / 0.90 (smollm2-135m /
            gemma-3-270m) for 16.1% / 15.0% of the exact restoration cost, against 0.93 / 0.90
            for 19.1% / 18.0% without a stride (screen 0.3, two stages).
        linearize: how the estimate linearises (``estimate_grid``). ``None``: ``"logprob"``
            when a screen runs and ``metric="prob"`` (on known facts of both bundled models it
            put more of the exact top 10 among the screened cells), else ``"metric"`` (without
            a screen the estimates are scores of the result, and the log-space estimate
            overshoots where the linearised log-probability passes 0). Ours.
        rounds: the ranked cells are restored in this many rounds. Each round restores the
            open cells of highest priority; a restored cell raises its neighbours' priority
            (the layer above or below, the token before or after) to its exact effect, so a
            strong exact cell pulls in its neighbours. 1: a plain ranking. Ours: 1.
        stop_below: stop after a round whose exact indirect effects are all below
            ``stop_below`` x |total effect| (the random sample is still restored). ``None``:
            spend the whole budget.
        Other arguments as in ``causal_trace``; ``seed`` also draws the random sample.
    """
    if not 0 <= check <= 1:
        raise ArgumentError(f"check={check!r} is a share of the budget: pass a value in [0, 1]")
    if rounds < 1:
        raise ArgumentError(f"rounds={rounds!r}: pass at least 1")
    if screen_samples is not None and screen_samples < 1:
        raise ArgumentError(f"screen_samples={screen_samples!r}: pass at least 1")
    if screen is not None and (isinstance(screen, bool) or screen < 0):
        raise ArgumentError(f"screen={screen!r}: pass 0 (no screen), a share or a number of cells")
    if screen:
        _n_cells(screen, 1, "screen")  # a share above 1 fails here, before any work
    if max_exact is not None and (isinstance(max_exact, bool) or max_exact < 0):
        raise ArgumentError(f"max_exact={max_exact!r}: pass a number of cells (0: no cap)")
    if screen_stride is not None and (isinstance(screen_stride, bool) or screen_stride < 1):
        raise ArgumentError(f"screen_stride={screen_stride!r}: pass at least 1 (1: no stride)")
    if refine is not None:
        refine = _check_refine(refine)
    if linearize is not None:
        _check_linearize(linearize, metric)
    prep = prepare_trace(
        model,
        prompt,
        subject,
        answer=answer,
        kind=kind,
        window=window,
        noise=noise,
        n_samples=n_samples,
        seed=seed,
        corrupted_prompt=corrupted_prompt,
        metric=metric,
        positions=positions,
        layers=layers,
        contrast=contrast,
        method=method,
        keep_graph=True,
    )
    screen, screen_samples, refine, stride, max_exact = screen_for(
        kind, screen, screen_samples, refine, screen_stride, max_exact
    )
    screen_rows = tuple(range(screen_samples)) if screen and screen_samples < prep.n_rows else ()
    if linearize is None:
        linearize = default_linearize(metric, screen_rows)
    ie, moved = estimate_grid(prep, linearize)
    restorer = _Restorer(prep, memory_budget)
    plan = _run_policy(
        ie,
        moved,
        restorer,
        budget=budget,
        check=check,
        screen=screen,
        screen_rows=screen_rows,
        rounds=rounds,
        stop_below=stop_below,
        total_effect=abs(prep.clean_score - prep.corrupt_score),
        seed=seed,
        refine=refine,
        stride=stride,
        max_exact=max_exact,
    )
    exact, screened, sample = plan.exact, plan.screened, plan.sample
    n_rows, n_cols = ie.shape
    total = n_rows * n_cols
    is_exact = torch.zeros(n_rows, n_cols, dtype=torch.bool)
    is_screened = torch.zeros_like(is_exact)
    is_checked = torch.zeros_like(is_exact)
    for c in exact:
        is_exact[c] = True
    samples = torch.zeros(n_rows, n_cols, dtype=torch.long)
    for c in screened:
        is_screened[c] = True
        samples[c] = len(plan.screen_rows[c])
    for c in exact:
        samples[c] = prep.n_rows
    for c in sample:
        is_checked[c] = True
    is_inferred = torch.zeros_like(is_exact)
    for c in plan.inferred:
        is_inferred[c] = True
    scores = _plan_scores(ie, plan, restorer)
    est_ie = torch.tensor([float(ie[c]) for c in sample])
    exact_ie = torch.tensor([restorer.exact_ie(c) for c in sample])
    errors = (est_ie - exact_ie).abs()
    return AdaptiveTrace(
        **prep.fields(scores),
        estimate=prep.corrupt_score + ie,
        exact=is_exact,
        checked=is_checked,
        screened=is_screened,
        inferred=is_inferred,
        restored_round=plan.round_of,
        budget=plan.n_budget,
        screen_samples=len(screen_rows),
        samples=samples,
        refine=tuple(refine),
        screen_stride=stride if screen_rows else 1,
        linearize=linearize,
        work=restorer.n_restored / (total * prep.n_rows),
        rank_correlation=_spearman(est_ie, exact_ie),
        max_error=float(errors.max()) if len(sample) else None,
        mean_abs_error=float(errors.mean()) if len(sample) else None,
        stopped_early=plan.stopped,
    )
