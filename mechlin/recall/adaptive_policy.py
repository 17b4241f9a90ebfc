"""The adaptive trace's policy: which cells to restore, on which noise samples, in what order.

``_run_policy`` takes every cell's estimated indirect effect (``estimate_grid``), where the
corruption can move the metric at all, and a restorer, and runs steps 2-4 of
``adaptive_trace``:

- the screen: the ``screen`` share (or number) of the reachable cells the estimate ranks
  highest is restored on the first ``screen_samples`` noise samples only. With a stride, only
  the cells at one grid row in ``stride`` (and the last) are restored; a skipped cell takes the
  mean effect of the nearest screened cells above and below it in its column, within the
  stride (a window of 10 sublayers shares all but a few of them with its neighbours);
- the refinement: stage k, given as (below, above), restores the screened (or inferred) cells
  ranked from below x n above the cut to above x n below it on the first k x
  ``screen_samples`` noise samples and ranks them again (n: the cells the budget ranks, the
  random sample apart);
- the ranked restorations: the ``budget`` cells of highest priority (the screened effect
  where screened, else the estimate) are completed on every noise sample, in ``rounds``
  rounds; a restored cell raises its four neighbours' priority to its exact effect, and
  ``stop_below`` ends the rounds once a round's effects are all small;
- the random sample: one cell from each of ``check`` x budget equal strata of the estimate's
  ranking of the reachable cells not restored, to measure the estimate's error. A budget
  larger than those is filled up with the others, restored but not drawn.

A budget or screen is a share of the grid, rounded down (a share is an upper bound) to at
least one cell, or a number of cells (``_n_cells``). The restorer is the trace's engine
(``_Restorer``: each (cell, noise sample) is computed once; a cell screened on some samples
is completed later) or a table of every cell's value on every sample (``_TableRestorer``):
``benchmarks/adaptive_policies.py`` replays the very same policy on saved exact traces, and
the tests check that the replay reproduces ``adaptive_trace``. The settings by kind are
``SCREEN_DEFAULTS`` (ours; ``screen_for`` resolves them, ``default_linearize`` the estimate's
linearisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from mechlin.errors import ArgumentError
from mechlin.recall.attribution import Linearize
from mechlin.recall.tracing import PreparedTrace

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


def default_linearize(metric: str, screen_rows: Sequence[int]) -> Linearize:
    """``adaptive_trace``'s ``linearize=None``: the log-probability when a screen runs and the
    metric is the probability, else the metric itself (see its docstring)."""
    return "logprob" if metric == "prob" and len(screen_rows) else "metric"


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
