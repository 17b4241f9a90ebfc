"""Attribution patching and adaptive causal tracing: screen every cell cheaply, restore few exactly.

Exact causal tracing costs one restored run per (layer, position) cell. Attribution patching
(Nanda 2023; AtP in Kramar et al. 2024) estimates every cell's indirect effect at once from one
forward and one backward pass of the corrupted run, by the first-order Taylor expansion of the
metric m around the corrupted activations a*:

    IE(l, t) ~ (a_clean(l, t) - a*(l, t)) . dm/da(l, t) |_{corrupted run}

In noise mode each noise sample has its own corrupted activations and gradient; the estimate
is the mean over samples, like the exact score. In corrupted-prompt mode there is one row. For
``kind="mlp"``/``"attn"`` a cell restores a window of sublayer outputs at one token; its
estimate is the sum of the window's single-layer estimates (this ignores how restoring one
sublayer of the window changes the next ones at the same token, one of the ways the estimate
can err). The gradients come from TransformerLens's ``cache_activation_and_gradient``
(``transformer_lens.tools.analysis.attribution_patching``); mechlin adds the noise mode (a
hook on the embeddings around that call), windows, and ROME's metrics and grid.

The estimate is cheap and often right, and wrong in known ways: a saturated softmax (use
``metric="logprob"`` or ``"logit_diff"``, or ``linearize="logprob"``: linearise the
log-probability and read the probability back), attention patterns that a restoration changes
non-linearly, the first layers (Kramar et al. 2024). ``adaptive_trace`` therefore screens: it
restores the cells the estimate ranks highest on a few of the noise samples (exact for those
samples, far better ranked than by the estimate), then restores exactly, with the same engine
and the same noise as ``causal_trace``, the cells the screen ranks highest plus a stratified
random sample of the others, and reports per cell whether its score is exact, screened or
estimated, and the estimate's error on the random sample. The exact cells of an adaptive run
equal the cells of ``causal_trace`` with the same arguments.

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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens.tools.analysis.attribution_patching import cache_activation_and_gradient

from mechlin import sites, viz
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.errors import ArgumentError
from mechlin.recall._engines import Kind, Metric, TraceSetup, _noise_hooks, last_position_only
from mechlin.recall.tracing import CausalTrace, PreparedTrace, prepare_trace


@dataclass(frozen=True)
class AttributionTrace(CausalTrace):
    """Attribution-patching estimates of every cell's score (a ``CausalTrace`` of estimates).

    ``scores`` = corrupt_score + the first-order estimate of each cell's indirect effect; it
    plots, tabulates and saves like a ``CausalTrace``.
    """

    def summary(self) -> str:
        return "attribution estimate (first order, no cell restored): " + super().summary()

    def plot(self, ax: Any = None) -> Any:
        fig = super().plot(ax)
        fig.axes[0].set_title(
            f"Estimated (attribution patching) impact of restoring state: {self.answer!r}",
            fontsize=9,
        )
        return fig


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


# --- the estimate -----------------------------------------------------------------------------


def _metric_of_logits(logits: Tensor, setup: TraceSetup, metric: str) -> Tensor:
    last = logits[:, -1].float()
    if metric == "prob":
        return last.softmax(-1)[:, setup.answer_id]
    if metric == "logprob":
        return last.log_softmax(-1)[:, setup.answer_id]
    assert setup.contrast_id is not None
    return last[:, setup.answer_id] - last[:, setup.contrast_id]


Linearize = Literal["metric", "logprob"]


def layer_estimates(
    prep: PreparedTrace, linearize: Linearize = "metric"
) -> tuple[Float[Tensor, "rows n_layers pos"], Bool[Tensor, "n_layers pos"]]:
    """First-order estimate, per corrupted row, of restoring each single layer's site state at
    each position.

    One forward of the corrupted rows (with their noise) and one backward of the summed metric
    (rows are independent, so each row gets its own gradient); the forward is
    ``prepare_trace``'s corrupted run when it kept its graph (``keep_graph=True``; the graph
    serves one call), else a forward of the bridge through TransformerLens's
    ``cache_activation_and_gradient``. The estimate for row i is
    (clean - corrupted_i) . gradient_i of the trace's metric, or of the answer's log-probability
    with ``linearize="logprob"``. Also returns where a restoration can change the metric at
    all: the clean and corrupted states differ, and the state reaches the last position (the
    last layer's states at earlier positions feed nothing the metric reads). Elsewhere the
    indirect effect is 0 by construction.
    """
    model, setup = prep.model, prep.setup
    n_layers = int(model.cfg.n_layers)
    names = [sites.hook_name(model, prep.site, j) for j in range(n_layers)]
    rows = setup.corrupt.shape[0]
    differentiated = "logprob" if linearize == "logprob" else prep.metric

    def metric_fn(logits: Tensor) -> Tensor:
        return _metric_of_logits(logits, setup, differentiated).sum()

    graph = prep.take_graph()
    grads: Sequence[Tensor | None] = ()
    if graph is not None:  # prepare_trace's corrupted run, recorded: one backward from it
        live = [graph.activations[name] for name in names]
        with torch.enable_grad():
            metric = metric_fn(graph.logits[:, None])
        grads = torch.autograd.grad(metric, live, allow_unused=True)
        activations = {name: a.detach() for name, a in zip(names, live, strict=True)}
        gradients: dict[str, Tensor | None] = dict(zip(names, grads, strict=True))
    if graph is None or any(g is None for g in grads):
        # Every layer's site reaches the metric, so a missing gradient means the hooked tensor
        # is one the forward does not consume (TransformerLens converts some hook points):
        # cache_activation_and_gradient reads the gradients with backward hooks instead.
        noise_hooks = _noise_hooks(model, setup, torch.arange(rows))
        hooks = [*noise_hooks, (sites.hook_name(model, "final_resid"), last_position_only)]
        with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
            cache = cache_activation_and_gradient(
                model, setup.corrupt, metric_fn, names_filter=names
            )
        activations, gradients = cache.activations, cache.gradients
    out = torch.zeros(rows, n_layers, setup.corrupt.shape[1])
    changed = torch.zeros(n_layers, setup.corrupt.shape[1], dtype=torch.bool)
    for j, name in enumerate(names):
        grad = gradients.get(name)
        delta = prep.clean_states[j].to(activations[name].dtype) - activations[name]
        changed[j] = (delta != 0).any(-1).any(0).cpu()
        if grad is not None:  # None: the site does not reach the metric
            out[:, j] = (delta.float() * grad.float()).sum(-1).cpu()
    changed[n_layers - 1, :-1] = False  # read by no later layer, and not the last position
    return out, changed


def default_linearize(metric: str, screen_rows: Sequence[int]) -> Linearize:
    """``adaptive_trace``'s ``linearize=None``: the log-probability when a screen runs and the
    metric is the probability, else the metric itself (see its docstring)."""
    return "logprob" if metric == "prob" and len(screen_rows) else "metric"


def _check_linearize(linearize: str, metric: str) -> None:
    if linearize not in ("metric", "logprob"):
        raise ArgumentError(f"linearize={linearize!r}: pass 'metric' or 'logprob'")
    if linearize == "logprob" and metric == "logit_diff":
        raise ArgumentError(
            'linearize="logprob" reads back a probability; with metric="logit_diff" pass '
            'linearize="metric"'
        )


def estimate_grid(
    prep: PreparedTrace, linearize: Linearize = "metric"
) -> tuple[Float[Tensor, "n_rows n_positions"], Bool[Tensor, "n_rows n_positions"]]:
    """Estimated indirect effect of every cell of the trace's grid (windows summed), and
    which cells restore a state that differs from the corrupted run's.

    ``linearize="metric"``: the mean over corrupted rows of the metric's first-order change.
    ``linearize="logprob"`` (metric ``prob`` or ``logprob``): the answer's log-probability is
    linearised per row and the probability read back, exp(min(log p_i + d_i, 0)) - p_i,
    averaged over rows: a restoration that lifts a tiny probability is estimated on the scale
    where its effect is close to linear (for ``logprob`` this is the plain estimate).
    """
    _check_linearize(linearize, prep.metric)
    per_row, moved = row_estimates(prep, linearize)
    return combine_rows(per_row, prep.corrupt_rows, linearize, prep.metric), moved


def row_estimates(
    prep: PreparedTrace, linearize: Linearize = "metric"
) -> tuple[Float[Tensor, "rows n_rows n_positions"], Bool[Tensor, "n_rows n_positions"]]:
    """Each corrupted row's first-order change of every cell of the grid (windows summed), in
    the metric or in the log-probability (``linearize``), and which cells can change at all."""
    per_layer, changed = layer_estimates(prep, linearize)
    cols = torch.tensor(prep.positions)
    per_row = torch.stack(
        [per_layer[:, list(restored)].sum(1)[:, cols] for _, restored in prep.cells], 1
    )  # rows, grid rows, grid columns
    moved = torch.stack([changed[list(restored)].any(0)[cols] for _, restored in prep.cells])
    return per_row, moved


def combine_rows(
    per_row: Tensor, corrupt_rows: Tensor, linearize: Linearize, metric: str
) -> Float[Tensor, "n_rows n_positions"]:
    """The estimated indirect effect from each row's first-order change (``estimate_grid``)."""
    if linearize == "logprob" and metric == "prob":
        p = corrupt_rows.to(per_row.dtype)[:, None, None]
        return (torch.exp((p.log() + per_row).clamp(max=0)) - p).mean(0)
    return per_row.mean(0)


@checked
def attribution_patch(
    model: Model,
    prompt: str,
    subject: str,
    *,
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
    linearize: Linearize = "metric",
) -> AttributionTrace:
    """Estimate every cell of ``causal_trace`` by attribution patching (no cell restored).

    Arguments as in ``causal_trace``; the corruption (noise samples, seed, corrupted prompt)
    and the scores' meaning are the same, so the result compares cell by cell with the exact
    trace. Costs the clean run, the corrupted run and one backward pass.

    Args:
        linearize: ``"metric"``: the first-order change of the metric itself (AtP).
            ``"logprob"``: linearise the answer's log-probability per noise sample and read the
            probability back (``estimate_grid``); for ``metric="prob"`` this ranks cells that
            lift a tiny probability better. Not with ``metric="logit_diff"``.
    """
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
        method="auto",
        keep_graph=True,
    )
    ie, _ = estimate_grid(prep, linearize)
    return AttributionTrace(**prep.fields(prep.corrupt_score + ie))


# --- adaptive --------------------------------------------------------------------------------


def _n_cells(budget: float | int, total: int, name: str) -> int:
    if isinstance(budget, bool) or budget <= 0:
        raise ArgumentError(f"{name}={budget!r}: pass a share in (0, 1] or a number of cells >= 1")
    if isinstance(budget, float):
        if budget > 1:
            raise ArgumentError(
                f"{name}={budget!r} is a share of the cells and must be at most 1; pass an int "
                "for a number of cells"
            )
        # Rounded down (a share is an upper bound), the 1e-9 absorbing float error in the
        # product (0.7 * 90 is 62.99999999999999); at least one cell.
        return max(1, min(total, math.floor(budget * total + 1e-9)))
    return min(total, int(budget))


class _Restorer:
    """Each cell's metric per corrupted row, restored on demand with the trace's own engine.

    ``values[r, c, i]`` is cell (r, c)'s metric on corrupted row i, NaN until restored. A cell
    can be restored on some rows first (the screen) and completed later; each row of each cell
    is computed once.
    """

    def __init__(self, prep: PreparedTrace, memory_budget: int) -> None:
        self.prep = prep
        self.memory_budget = memory_budget
        self.corrupt_rows = prep.corrupt_rows  # each noise sample's corrupted metric
        self.corrupt_score = prep.corrupt_score
        n_rows = prep.setup.corrupt.shape[0]
        self.values = torch.full((len(prep.cells), len(prep.positions), n_rows), math.nan)
        self.n_restored = 0  # (cell, row) restorations run

    def restore(self, cells: Sequence[tuple[int, int]], rows: Sequence[int] | None = None) -> None:
        """Restore the given cells on ``rows`` (default: every row), skipping rows done."""
        prep = self.prep
        wanted = list(range(self.values.shape[2]) if rows is None else rows)
        # One engine call: each cell on the rows it still lacks (the engine groups positions).
        todo: list[tuple[int, int, list[int]]] = []
        for r, c in sorted(cells, key=lambda cell: (cell[1], cell[0])):
            done = ~torch.isnan(self.values[r, c])
            missing = [i for i in wanted if not done[i]]
            if missing:
                todo.append((r, c, missing))
        if not todo:
            return
        got = prep.engine.cell_scores(
            prep.setup,
            prep.site,
            [prep.cells[r] for r, _, _ in todo],
            [prep.positions[c] for _, c, _ in todo],
            [missing for _, _, missing in todo],
            prep.clean_states,
            prep.metric,  # type: ignore[arg-type]
            self.memory_budget,
        )
        for (r, c, missing), values in zip(todo, got, strict=True):
            self.values[r, c, missing] = values
            self.n_restored += len(missing)

    def exact_ie(self, cell: tuple[int, int]) -> float:
        """The exact indirect effect of a cell restored on every row."""
        return float(self.values[cell].mean()) - self.corrupt_score

    def partial_ie(self, cell: tuple[int, int], rows: Sequence[int]) -> float:
        """The indirect effect on the given rows only: mean over them of restored - corrupted."""
        idx = list(rows)
        return float(self.values[cell][idx].mean() - self.corrupt_rows[idx].mean())


class _TableRestorer(_Restorer):
    """A ``_Restorer`` that looks the restored metrics up in a table of every cell's value on
    every row (``benchmarks/adaptive_policies.py`` replays the adaptive policy on saved exact
    traces with it; the tests check it reproduces ``adaptive_trace``)."""

    def __init__(
        self, table: Tensor, corrupt_rows: Tensor, corrupt_score: float
    ) -> None:  # table: (grid rows, grid columns, noise rows)
        self.table = table
        self.values = torch.full_like(table, math.nan)
        self.corrupt_rows = corrupt_rows
        self.corrupt_score = corrupt_score
        self.n_restored = 0

    def restore(self, cells: Sequence[tuple[int, int]], rows: Sequence[int] | None = None) -> None:
        wanted = list(range(self.values.shape[2]) if rows is None else rows)
        for cell in cells:
            missing = [i for i in wanted if math.isnan(float(self.values[cell][i]))]
            self.values[cell][missing] = self.table[cell][missing]
            self.n_restored += len(missing)


@dataclass
class _Plan:
    exact: set[tuple[int, int]]
    sample: list[tuple[int, int]]
    screen_rows: dict[tuple[int, int], tuple[int, ...]]  # each screened cell: its noise samples
    inferred: dict[tuple[int, int], float]  # cells the stride skipped: their neighbours' mean IE
    round_of: Tensor
    n_budget: int
    stopped: bool

    @property
    def screened(self) -> list[tuple[int, int]]:
        return list(self.screen_rows)


def _run_policy(
    ie: Tensor,
    moved: Tensor,
    restorer: _Restorer,
    *,
    budget: float | int,
    check: float,
    screen: float | int,
    screen_rows: tuple[int, ...],
    rounds: int,
    stop_below: float | None,
    total_effect: float,
    seed: int,
    refine: Sequence[tuple[float, float]] = (),
    stride: int = 1,
    max_exact: int = 0,
) -> _Plan:
    """The adaptive policy: screen, refinement near the cut, ranked exact restorations, random
    sample (steps 2-4 of ``adaptive_trace``), run against a restorer (the engine's, or a
    table's)."""
    n_rows, n_cols = ie.shape
    total = n_rows * n_cols
    n_budget = _n_cells(budget, total, "budget")
    if max_exact:
        n_budget = min(n_budget, max_exact)
    n_check = min(round(check * n_budget), n_budget)
    n_top = n_budget - n_check
    order = torch.argsort(ie.reshape(-1), descending=True, stable=True).tolist()
    ranked = [divmod(k, n_cols) for k in order]
    reachable = [c for c in ranked if bool(moved[c])]  # elsewhere the effect is 0 by design

    # The screen: the estimate's highest cells on a few noise samples; with a stride, only
    # those at every stride-th grid row (and the last) are restored, and a skipped one takes the
    # mean of the nearest screened cells above and below it in its column, within the stride.
    priority = ie.clone()
    chosen = reachable[: _n_cells(screen, total, "screen")] if screen_rows else []
    screened = [c for c in chosen if c[0] % stride == 0 or c[0] == n_rows - 1]
    restorer.restore(screened, screen_rows)
    for c in screened:
        priority[c] = restorer.partial_ie(c, screen_rows)
    rows_of = dict.fromkeys(screened, screen_rows)
    inferred: dict[tuple[int, int], float] = {}
    for r, col in (c for c in chosen if c not in rows_of):
        near = [
            next(((r + d * k, col) for k in range(1, stride) if (r + d * k, col) in rows_of), None)
            for d in (-1, 1)
        ]
        seen = [float(priority[c]) for c in near if c is not None]
        if seen:
            inferred[r, col] = sum(seen) / len(seen)
    for c, value in inferred.items():
        priority[c] = value
    # Refinement: the screened cells ranked near the cut (the n_top-th cell) are screened on
    # more noise samples, stage by stage, and ranked again.
    n_samples = restorer.values.shape[2]
    for stage, (below, above) in enumerate(refine if screened else (), start=2):
        rows = tuple(range(min(n_samples, stage * len(screen_rows))))
        by_priority = sorted(ranked, key=lambda c: -float(priority[c]))  # stable, as below
        lo = max(0, n_top - math.ceil(below * n_top))
        band = by_priority[lo : n_top + math.ceil(above * n_top)]
        border = [c for c in band if c in rows_of or c in inferred]
        restorer.restore(border, rows)
        for c in border:
            priority[c] = restorer.partial_ie(c, rows)
            rows_of[c] = rows
            inferred.pop(c, None)

    exact: set[tuple[int, int]] = set()
    round_of = torch.zeros(n_rows, n_cols, dtype=torch.long)
    stopped = False
    step = max(1, math.ceil(n_top / rounds))
    final: list[tuple[int, int]] = []  # the last round, restored with the random sample
    for k in range(1, rounds + 1):
        want = min(step, n_top - len(exact))
        if want <= 0:
            break
        open_cells = [c for c in ranked if c not in exact]
        # Stable: ties keep the estimate order; cells the corruption cannot move come last.
        open_cells.sort(key=lambda c: (not bool(moved[c]), -float(priority[c])))
        batch = open_cells[:want]
        exact.update(batch)
        for r, c in batch:
            round_of[r, c] = k
        if k == rounds or len(exact) >= n_top:
            # Nothing after this round reads its values: restore it in the same batches as
            # the random sample (drawn from the cells outside it, as after a restore).
            final = batch
            break
        restorer.restore(batch)
        for r, c in batch:
            found = restorer.exact_ie((r, c))
            for nb in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= nb[0] < n_rows and 0 <= nb[1] < n_cols and nb not in exact:
                    priority[nb] = max(float(priority[nb]), found)
        if stop_below is not None and all(
            restorer.exact_ie(c) < stop_below * total_effect for c in batch
        ):
            stopped = len(exact) < n_top
            break
    # The random sample: from the reachable cells not restored exactly. A budget larger than
    # those is filled up with the others (a whole budget is the whole grid); they are restored
    # but not drawn, so they do not enter the estimate's measured error.
    generator = torch.Generator().manual_seed(seed)
    sample = _stratified_sample([c for c in reachable if c not in exact], n_check, generator)
    taken = exact | set(sample)
    filler = [c for c in ranked if c not in taken][: n_check - len(sample)]
    restorer.restore(final + sample + filler)
    exact.update(sample + filler)
    return _Plan(exact, sample, rows_of, inferred, round_of, n_budget, stopped)


def _plan_scores(ie: Tensor, plan: _Plan, restorer: _Restorer) -> Tensor:
    """Each cell's score: exact where restored on every row, else screened (on the rows it was
    screened on), else inferred from its screened neighbours, else estimated."""
    scores = restorer.corrupt_score + ie
    for c, value in plan.inferred.items():
        scores[c] = restorer.corrupt_score + value
    for c in plan.screened:
        scores[c] = restorer.corrupt_score + restorer.partial_ie(c, plan.screen_rows[c])
    full = restorer.values.mean(-1)  # exact scores, as causal_trace averages them
    for c in plan.exact:
        scores[c] = full[c]
    return scores


def _check_refine(refine: Sequence[tuple[float, float]]) -> Refine:
    try:
        stages = tuple((float(below), float(above)) for below, above in refine)
    except (TypeError, ValueError):
        raise ArgumentError(
            f"refine={refine!r}: pass stages as (below, above) pairs of shares, e.g. "
            "((0.7, 2.0), (0.35, 0.7)), or () for none"
        ) from None
    if any(not (math.isfinite(b) and math.isfinite(a) and b >= 0 and a >= 0) for b, a in stages):
        raise ArgumentError(f"refine={refine!r}: the shares must be finite and >= 0")
    return stages


def _stratified_sample(
    ranked: list[tuple[int, int]], n: int, generator: torch.Generator
) -> list[tuple[int, int]]:
    """One cell drawn at random from each of ``n`` equal strata of the ranking."""
    if n <= 0 or not ranked:
        return []
    n = min(n, len(ranked))
    bounds = [round(k * len(ranked) / n) for k in range(n + 1)]
    picks = []
    for k in range(n):
        lo, hi = bounds[k], bounds[k + 1]
        picks.append(ranked[lo + int(torch.randint(hi - lo, (1,), generator=generator))])
    return picks


def _spearman(a: Tensor, b: Tensor) -> float | None:
    if a.numel() < 3 or float(a.std()) == 0 or float(b.std()) == 0:
        return None
    from scipy.stats import spearmanr  # noqa: PLC0415  (scipy is slow to import)

    return float(spearmanr(a.numpy(), b.numpy()).statistic)


Refine = tuple[tuple[float, float], ...]


class Screen(NamedTuple):
    """``adaptive_trace``'s screen for one kind (``SCREEN_DEFAULTS``)."""

    share: float  # ``screen``: share of the cells the estimate ranks highest
    samples: int  # ``screen_samples``
    refine: Refine  # ``refine``
    stride: int  # ``screen_stride``
    max_exact: int  # ``max_exact`` (0: no cap)


# adaptive_trace's screen per kind (ours). The residual stream's was chosen on facts 51-60 of
# known_1000 per bundled model (replayed on their exact traces, each restoration weighted by the
# layers x positions it reruns) and held out on facts 61-100; the attention windows keep the
# 2-sample screen without refinement, which already found their top 10; the MLP windows' stride
# was chosen on facts 51-75 and held out on the next ones, its cap of exact cells on facts
# 126-150 and held out on 151-200 (README status).
SCREEN_DEFAULTS: dict[str, Screen] = {
    "resid": Screen(0.3, 1, ((0.5, 1.0),), 1, 0),
    "mlp": Screen(0.4, 2, ((0.5, 1.0),), 3, 24),
    "attn": Screen(0.3, 2, (), 1, 0),
}


def screen_for(
    kind: str,
    share: float | int | None = None,
    samples: int | None = None,
    refine: Refine | None = None,
    stride: int | None = None,
    max_exact: int | None = None,
) -> Screen:
    """The screen ``adaptive_trace`` runs for ``kind``: the given values, the kind's
    ``SCREEN_DEFAULTS`` where ``None`` (``benchmarks/adaptive_policies.py`` resolves its
    ``kind`` settings with it)."""
    default = SCREEN_DEFAULTS[kind]
    return Screen(
        default.share if share is None else share,
        default.samples if samples is None else samples,
        default.refine if refine is None else refine,
        default.stride if stride is None else int(stride),
        default.max_exact if max_exact is None else int(max_exact),
    )


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
