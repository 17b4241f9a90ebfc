"""Adaptive tracing: the exact cells of an adaptive run are ``causal_trace``'s cells; the screen,
refinement, stride, rounds and random sample choose as the policy says; the policy replayed on a
table is ``adaptive_trace``; the engine's scattered cells equal the whole table."""

from __future__ import annotations

import math

import pytest
import torch

import mechlin
from mechlin.errors import ArgumentError
from mechlin.recall._engines import ReplayEngine, merge_positions
from mechlin.recall.adaptive import AdaptiveTrace, adaptive_trace
from mechlin.recall.adaptive_policy import SCREEN_DEFAULTS, _n_cells
from mechlin.recall.attribution import AttributionTrace, attribution_patch
from mechlin.recall.tracing import causal_trace
from tests.recall.test_attribution import CORRUPTED, PROMPT, SUBJECT, _noise
from tests.reference.causal_trace_ref import reference_trace


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
@pytest.mark.parametrize("kind", ["resid", "mlp", "attn"])
@pytest.mark.parametrize("mode", ["noise", "prompt"])
@pytest.mark.parametrize("method", ["replay", "packed"])
def test_adaptive_exact_cells_are_the_exact_trace(fixture, kind, mode, method, request) -> None:
    # Equal to float32 rounding: the exact cells run in smaller batches than in the full trace,
    # and CPU matrix kernels may round a row differently in a batch of another size. The scores
    # are log-probabilities (|log p| ~ 5): each row's is off by about an ulp of |log p| (1 ulp,
    # 4.8e-7, seen), the mean of 4 rows adds a few ulps; 8 eps * (1 + |log p|) bounds it (5e-6
    # here, an absolute 1e-6 would be 2 ulps), far below a wrong restoration's change.
    model = request.getfixturevalue(fixture)
    kw = dict(
        kind=kind,
        window=2,
        n_samples=4,
        noise=2.0,
        corrupted_prompt=CORRUPTED if mode == "prompt" else None,
        metric="logprob",
        method=method,
    )
    exact = causal_trace(model, PROMPT, SUBJECT, **kw)
    adaptive = adaptive_trace(model, PROMPT, SUBJECT, budget=0.3, **kw)
    assert isinstance(adaptive, AdaptiveTrace)
    mask = adaptive.exact
    assert 0 < adaptive.n_exact <= adaptive.budget == math.floor(0.3 * exact.scores.numel())
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(
        adaptive.scores[mask], exact.scores[mask], rtol=8 * eps, atol=8 * eps
    )
    plain = ~mask & ~adaptive.screened & ~adaptive.inferred  # (mlp's screen strides)
    assert torch.equal(adaptive.scores[plain], adaptive.estimate[plain])
    assert (adaptive.screen_samples > 0) == (mode == "noise")  # no rows to split in a prompt
    assert bool(adaptive.screened.any()) == (mode == "noise")
    # The same clean and corrupted runs (prepare_trace; the adaptive trace's records autograd,
    # which does not change its arithmetic): bit for bit.
    assert adaptive.clean_score == exact.clean_score
    assert adaptive.corrupt_score == exact.corrupt_score
    assert adaptive.checked.sum() > 0 and bool((adaptive.checked <= adaptive.exact).all())


def test_adaptive_exact_cells_match_the_exact_trace_on_smollm2(smollm2) -> None:
    # A real model: CPU matrix kernels round differently for batches of other sizes, so the
    # cells agree to float32 rounding (not bit for bit as on the tiny models). The scores are
    # probabilities, p = exp(log p): the logits' rounding moves log p by a few ulps of the
    # logits' scale, so p by a share of it: 8 eps * max|logit| relative (~2.7e-5 here; 4e-7 at
    # p = 0.70 seen under MKL_CBWR=COMPATIBLE, 2e-9 with the default kernels).
    kw = dict(kind="mlp", n_samples=3, layers=range(0, 30, 3))
    exact = causal_trace(smollm2, PROMPT, SUBJECT, **kw)
    adaptive = adaptive_trace(smollm2, PROMPT, SUBJECT, budget=0.2, **kw)
    mask = adaptive.exact
    with torch.no_grad():
        scale = float(smollm2(PROMPT)[0, -1].abs().max())
    rtol = 8 * torch.finfo(torch.float32).eps * scale
    torch.testing.assert_close(adaptive.scores[mask], exact.scores[mask], rtol=rtol, atol=0)


def test_whole_budget_is_the_exact_trace(tiny, monkeypatch) -> None:
    kw = dict(kind="resid", n_samples=3, noise=2.0)
    exact = causal_trace(tiny, PROMPT, SUBJECT, **kw)
    full = adaptive_trace(tiny, PROMPT, SUBJECT, budget=1.0, check=0.0, screen=0, **kw)
    assert bool(full.exact.all()) and full.work == 1.0
    # The tiny model has so few rows per position that the cost model replays its positions
    # together (from the first one; see cell_scores): other batch shapes, so equal to float32
    # rounding. With every position replayed on its own, the batches are the exact trace's:
    # bit for bit.
    assert torch.allclose(full.scores, exact.scores, atol=1e-6, rtol=0)
    monkeypatch.setattr(ReplayEngine, "call_cost", 0.0)
    alone = adaptive_trace(tiny, PROMPT, SUBJECT, budget=1.0, check=0.0, screen=0, **kw)
    assert torch.equal(alone.scores, exact.scores)
    # With a screen the rows of a cell are computed in two batches (the screen's, the rest):
    # equal to float32 rounding.
    screened = adaptive_trace(tiny, PROMPT, SUBJECT, budget=1.0, check=0.0, screen=0.5, **kw)
    assert screened.n_screened > 0 and bool(screened.exact.all())
    assert torch.allclose(screened.scores, exact.scores, atol=1e-6, rtol=0)
    assert screened.work == 1.0  # every (cell, row) restored once, none twice


def test_screen_ranks_by_the_screened_samples(tiny) -> None:
    # The screen restores the estimate's top cells on the first 2 of 4 noise samples; the
    # ranked exact cells are the top of that partial effect (else of the estimate); screened
    # cells that are not restored on every sample score their partial effect. The partial
    # effects are checked against ROME's loop run on those 2 samples alone.
    kw = dict(kind="resid", n_samples=4, noise=2.0)
    ad = adaptive_trace(
        tiny, PROMPT, SUBJECT, budget=6, check=0.0, screen=12, screen_samples=2, refine=(), **kw
    )
    assert ad.n_screened == 12 and ad.screen_samples == 2 and ad.n_exact == 6
    s0 = ad.subject_span[0]
    est = ad.estimate - ad.corrupt_score
    reachable = est.clone()
    reachable[:, :s0] = -math.inf
    reachable[-1, :-1] = -math.inf  # the last layer's states before the last token: read by none
    assert float(est[ad.screened].min()) >= float(reachable[~ad.screened].max())
    ref, _, ref_corrupt = reference_trace(
        tiny, PROMPT, SUBJECT, kind="resid", window=10, answer_id=ad.answer_id,
        noise=_noise(ad, tiny, n=4)[:2], corrupted_prompt=None, metric="prob",
    )  # fmt: skip
    partial = ref - ref_corrupt
    priority = torch.where(ad.screened, partial.to(est.dtype), est)
    assert float(priority[ad.exact].min()) >= float(priority[~ad.exact].max())
    assert float(priority[ad.exact].min()) > 0
    only = ad.screened & ~ad.exact
    assert torch.allclose(ad.scores[only], ad.corrupt_score + partial[only], atol=1e-6)
    assert 0 < ad.work < 1


@pytest.mark.parametrize("kind", ["resid", "mlp", "attn"])
def test_screen_defaults_by_kind(tiny, kind) -> None:
    # screen_samples=None and refine=None take the kind's SCREEN_DEFAULTS (1 sample refined on
    # a second for resid; 2 samples for the windows, refined for mlp only); given values win.
    kw = dict(kind=kind, n_samples=8, noise=2.0, budget=6, screen=14, window=2)
    ad = adaptive_trace(tiny, PROMPT, SUBJECT, **kw)
    samples, refine, stride = (SCREEN_DEFAULTS[kind][k] for k in (1, 2, 3))
    assert (ad.screen_samples, ad.refine, ad.screen_stride) == (samples, refine, stride)
    # the screen's own cells (not refined, not exact) sit at one layer in `stride` (or the last)
    rows = torch.nonzero(ad.screened & ~ad.exact & (ad.samples == samples))[:, 0].tolist()
    n_rows = ad.scores.shape[0]
    assert rows and all(r % stride == 0 or r == n_rows - 1 for r in rows)
    assert (ad.n_inferred > 0) == (stride > 1)
    assert bool((ad.samples[ad.inferred & ~ad.exact] == 0).all())
    stages = f"{len(refine)} refinement stage{'s' * (len(refine) > 1)} near the cut, up to "
    assert (f"{stages}{samples * (len(refine) + 1)} samples" in ad.summary()) == bool(refine)
    assert set(ad.samples[ad.screened & ~ad.exact].tolist()) <= {
        samples * stage for stage in range(1, len(refine) + 2)
    }
    mine = adaptive_trace(
        tiny, PROMPT, SUBJECT, screen_samples=3, refine=((1.0, 1.0),), screen_stride=2, **kw
    )
    assert (mine.screen_samples, mine.refine, mine.screen_stride) == (3, ((1.0, 1.0),), 2)
    assert set(mine.samples[mine.screened & ~mine.exact].tolist()) <= {3, 6}
    assert mine.n_inferred > 0 and "one layer in 2 of the grid" in mine.summary()


@pytest.mark.parametrize("kind", ["resid", "mlp"])
def test_max_exact_caps_the_budget(tiny, kind) -> None:
    # max_exact caps the cells restored exactly (the random sample included) whatever the
    # grid's size; None takes the kind's cap (SCREEN_DEFAULTS: 24 for mlp, none for resid);
    # 0 is no cap.
    kw = dict(kind=kind, n_samples=4, noise=2.0, budget=1.0, window=2)
    whole = adaptive_trace(tiny, PROMPT, SUBJECT, max_exact=0, **kw)
    n_cells = whole.scores.numel()
    assert whole.budget == n_cells > 24 and bool(whole.exact.all())
    capped = adaptive_trace(tiny, PROMPT, SUBJECT, max_exact=7, **kw)
    assert capped.budget == 7 and capped.n_exact == 7
    assert int(capped.checked.sum()) == round(0.25 * 7)  # the random sample is part of it
    by_kind = adaptive_trace(tiny, PROMPT, SUBJECT, **kw)
    cap = SCREEN_DEFAULTS[kind].max_exact
    assert cap == (24 if kind == "mlp" else 0)
    assert by_kind.budget == (cap or n_cells) and by_kind.n_exact == by_kind.budget


def test_refine_rescreens_the_cells_near_the_cut(tiny) -> None:
    # One refinement stage: the screened cells ranked within n (= 6) of the cut are restored
    # on the first 4 of 6 noise samples (2 more than the screen); priority and scores of those
    # cells are their effect on the 4 samples (checked against ROME's loop on those samples).
    kw = dict(kind="resid", n_samples=6, noise=2.0, budget=6, check=0.0, screen=14)
    ad = adaptive_trace(tiny, PROMPT, SUBJECT, screen_samples=2, refine=((1.0, 1.0),), **kw)
    plain = adaptive_trace(tiny, PROMPT, SUBJECT, screen_samples=2, refine=(), **kw)
    assert ad.refine == ((1.0, 1.0),) and plain.refine == ()
    assert set(plain.samples[plain.screened & ~plain.exact].tolist()) == {2}
    four = ad.screened & (ad.samples == 4)
    assert int(four.sum()) > 0 and bool((ad.samples[ad.exact] == 6).all())
    assert set(ad.samples[ad.screened & ~ad.exact].tolist()) <= {2, 4}
    assert bool((ad.samples[~ad.screened & ~ad.exact] == 0).all())
    noise = _noise(ad, tiny, n=6)
    loops = {}
    for n in (2, 4):
        ref, _, ref_corrupt = reference_trace(
            tiny, PROMPT, SUBJECT, kind="resid", window=10, answer_id=ad.answer_id,
            noise=noise[:n], corrupted_prompt=None, metric="prob",
        )  # fmt: skip
        loops[n] = ref - ref_corrupt
    # The policy, from the reference values: rank by the 2-sample effect (screened) or the
    # estimate; the border is the screened cells among the first n + n = 12; they rank by
    # their 4-sample effect; the top 6 are completed.
    est = (ad.estimate - ad.corrupt_score).double()
    first = torch.where(ad.screened, loops[2], est)
    order = torch.argsort(first.reshape(-1), descending=True, stable=True)[:12].tolist()
    border = torch.zeros_like(ad.screened)
    for k in order:
        r, c = divmod(k, first.shape[1])
        border[r, c] = bool(ad.screened[r, c])
    second = torch.where(border, loops[4], first)
    assert _cells(ad.exact) == _top(second, 6)
    assert torch.equal(four, border & ~ad.exact)
    only = four & ~ad.exact
    want = ad.corrupt_score + loops[4][only].double()
    assert torch.allclose(ad.scores[only].double(), want, atol=1e-6)
    assert plain.work < ad.work < 1
    assert "refinement" in ad.summary() and "samples" in ad.to_frame()


def _cells(mask):
    return {tuple(x) for x in torch.nonzero(mask).tolist()}


def _top(grid, k):
    flat = torch.topk(grid.reshape(-1), k).indices.tolist()
    return {divmod(i, grid.shape[1]) for i in flat}


def test_one_round_restores_the_highest_estimates(tiny) -> None:
    kw = dict(budget=6, check=0.0, n_samples=3, noise=2.0, rounds=1, screen=0)
    ad = adaptive_trace(tiny, PROMPT, SUBJECT, **kw)
    assert _cells(ad.exact) == _top(ad.estimate, 6)
    assert ad.rank_correlation is None  # no random sample, no error estimate


def test_later_rounds_follow_strong_exact_cells(tiny) -> None:
    ad = adaptive_trace(
        tiny, PROMPT, SUBJECT, budget=12, check=0.0, n_samples=3, noise=2.0, rounds=4, screen=0
    )
    first = _cells(ad.restored_round == 1)
    assert first == _top(ad.estimate, 3)  # round 1: the estimate's top quarter
    ie = ad.estimate - ad.corrupt_score
    exact_ie = ad.scores - ad.corrupt_score
    for k in (2, 3, 4):
        done = _cells((ad.restored_round >= 1) & (ad.restored_round < k))
        for r, c in _cells(ad.restored_round == k):
            # a cell of a later round is chosen by its own estimate or by a restored neighbour
            near = [
                exact_ie[n] for n in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)) if n in done
            ]
            priority = max([float(ie[r, c]), *map(float, near)])
            closed = ad.restored_round == 0
            assert priority >= float(ie[closed].max()) - 1e-9


def test_random_sample_reports_the_estimate_error(tiny) -> None:
    ad = adaptive_trace(tiny, PROMPT, SUBJECT, budget=12, check=0.5, n_samples=3, noise=2.0)
    sample = ad.checked
    assert int(sample.sum()) == 6
    est = (ad.estimate - ad.corrupt_score)[sample]
    exact = (ad.scores - ad.corrupt_score)[sample]
    assert ad.max_error == pytest.approx(float((est - exact).abs().max()), rel=1e-4)
    assert ad.mean_abs_error == pytest.approx(float((est - exact).abs().mean()), rel=1e-4)
    # the sample avoids cells the noise does not reach (their effect is 0 by construction)
    s0 = ad.subject_span[0]
    assert not bool(sample[:, :s0].any())


def test_stop_rule_ends_early(tiny) -> None:
    kw = dict(budget=20, check=0.0, n_samples=3, noise=2.0)
    ad = adaptive_trace(tiny, PROMPT, SUBJECT, stop_below=1e9, rounds=4, **kw)  # all below
    assert ad.stopped_early and ad.n_exact == 5  # one round of a quarter of 20
    full = adaptive_trace(tiny, PROMPT, SUBJECT, stop_below=None, rounds=4, **kw)
    assert not full.stopped_early and full.n_exact == 20


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(budget=0), "budget=0"),
        (dict(budget=1.5), "at most 1"),
        (dict(budget=-0.1), "budget=-0.1"),
        (dict(check=2.0), "check=2.0"),
        (dict(screen=-1), "screen=-1"),
        (dict(screen=1.5), "at most 1"),
        (dict(screen_samples=0), "screen_samples=0"),
        (dict(screen_stride=0), "screen_stride=0"),
        (dict(max_exact=-1), "max_exact=-1"),
        (dict(refine=((-1.0, 1.0),)), ">= 0"),
        (dict(refine=((0.5, math.inf),)), ">= 0"),
        (dict(linearize="log"), "linearize='log'"),
        (dict(linearize="logprob", metric="logit_diff", contrast=" Rome"), "logit_diff"),
    ],
)
def test_bad_budget(tiny, kwargs, fragment) -> None:
    with pytest.raises(ArgumentError, match=fragment.replace(".", r"\.")):
        adaptive_trace(tiny, PROMPT, SUBJECT, **kwargs)


@pytest.mark.parametrize(
    ("budget", "total", "cells"),
    [
        (0.1, 126, 12),  # gemma-3's 18 layers x 7 positions: 12.6 cells, at most 10% is 12
        (0.7, 90, 63),  # 0.7 * 90 is 62.99999999999999 in floats: still 63
        (0.3, 210, 63),
        (0.01, 50, 1),  # at least one cell
        (1.0, 7, 7),
        (5, 126, 5),  # a number of cells
        (500, 126, 126),
    ],
)
def test_a_budget_share_is_an_upper_bound(budget, total, cells) -> None:
    assert _n_cells(budget, total, "budget") == cells


def test_results_save_load_plot_and_table(tiny, tmp_path) -> None:
    ad = adaptive_trace(tiny, PROMPT, SUBJECT, budget=0.3, n_samples=2, noise=2.0)
    back = AdaptiveTrace.load(ad.save(tmp_path / "a.pt"))
    assert torch.equal(back.exact, ad.exact) and back.rank_correlation == ad.rank_correlation
    assert "restored exactly" in ad.summary()
    fig = ad.plot()
    assert len(fig.axes[0].patches) == ad.n_exact
    frame = ad.to_frame()
    assert frame["exact"].sum() == ad.n_exact and "estimate" in frame
    est = attribution_patch(tiny, PROMPT, SUBJECT, n_samples=2, noise=2.0)
    assert "attribution estimate" in est.summary()
    assert AttributionTrace.load(est.save(tmp_path / "e.pt")).answer == est.answer
    mechlin.viz.close(fig)
    mechlin.viz.close(est.plot())


def test_average_causal_effects_adaptive(tiny, tmp_path) -> None:
    facts = [(PROMPT, SUBJECT), (CORRUPTED, "Space Needle")]
    kw = dict(kinds=("resid", "mlp"), window=2, n_samples=2, noise=2.0, progress=False)
    exact = mechlin.average_causal_effects(tiny, facts, **kw)
    assert exact.method == "exact" and exact.share_exact == 1.0
    whole = mechlin.average_causal_effects(tiny, facts, method="adaptive", budget=1.0, **kw)
    assert whole.method == "adaptive" and whole.share_exact == 1.0
    assert torch.allclose(whole.aie, exact.aie, atol=1e-6)
    store = tmp_path / "ace"
    part = mechlin.average_causal_effects(
        tiny, facts, method="adaptive", budget=0.3, out=store, **kw
    )
    assert 0.25 <= part.share_exact <= 0.4
    assert "restored exactly" in part.summary()
    again = mechlin.average_causal_effects(
        tiny, facts, method="adaptive", budget=0.3, out=store, **kw
    )
    assert torch.equal(again.aie, part.aie)  # resumed from the store
    with pytest.raises(mechlin.StoreMismatchError, match="method"):
        mechlin.average_causal_effects(tiny, facts, out=store, **kw)
    with pytest.raises(mechlin.StoreMismatchError, match="adaptive"):
        mechlin.average_causal_effects(
            tiny, facts, method="adaptive", budget=0.3, out=store, adaptive={"screen": 0}, **kw
        )  # another screen: not what this store holds
    with pytest.raises(ArgumentError, match="unknown options"):
        mechlin.average_causal_effects(tiny, facts, method="adaptive", adaptive={"scren": 0}, **kw)
    # The options reach each fact's trace: a screen on 4 noise samples, none without one.
    kw4 = dict(kw, n_samples=4, kinds=("resid",))
    on = mechlin.average_causal_effects(tiny, facts, method="adaptive", budget=0.3, **kw4)
    off = mechlin.average_causal_effects(
        tiny, facts, method="adaptive", budget=0.3, adaptive={"screen": 0}, **kw4
    )
    assert not torch.equal(on.aie, off.aie)
    # A sweep screens every reachable cell unless told otherwise (an average keeps the
    # estimate's bias); adaptive_trace's own default screen (0.3) gives another average.
    every = mechlin.average_causal_effects(
        tiny, facts, method="adaptive", budget=0.3, adaptive={"screen": 1.0}, **kw4
    )
    assert torch.equal(on.aie, every.aie)
    single = mechlin.average_causal_effects(
        tiny, facts, method="adaptive", budget=0.3, adaptive={"screen": 0.3}, **kw4
    )
    assert not torch.equal(on.aie, single.aie)


def test_stride_infers_the_skipped_cells_from_their_column() -> None:
    # A 7 x 2 grid on 4 noise rows, every cell screened on rows 0-1 with stride 3: grid rows
    # 0, 3, 6 are restored; a skipped cell takes the mean of the nearest screened cells above
    # and below it within the stride (one of them where the other is out of reach), as its
    # priority and score. Cell (3, 0) cannot move (unreachable), so (1, 0) and (2, 0) see only
    # (0, 0), and (4, 0) and (5, 0) only (6, 0).
    from mechlin.recall.adaptive_policy import _plan_scores, _run_policy, _TableRestorer

    gen = torch.Generator().manual_seed(0)
    table = torch.rand(7, 2, 4, generator=gen)
    corrupt_rows = torch.zeros(4)
    ie = torch.linspace(1.0, 0.1, 14).reshape(7, 2)
    moved = torch.ones(7, 2, dtype=torch.bool)
    moved[3, 0] = False
    kw = dict(budget=2, check=0.0, screen=1.0, screen_rows=(0, 1), rounds=1, stop_below=None,
              total_effect=1.0, seed=0)  # fmt: skip
    restorer = _TableRestorer(table, corrupt_rows, 0.0)
    plan = _run_policy(ie, moved, restorer, stride=3, **kw)
    part = table[..., :2].mean(-1)  # each cell's effect on the screen's 2 rows
    assert set(plan.screened) == {(r, c) for r in (0, 3, 6) for c in (0, 1)} - {(3, 0)}
    want = {
        (1, 0): part[0, 0], (2, 0): part[0, 0], (4, 0): part[6, 0], (5, 0): part[6, 0],
        **{(r, 1): (part[0, 1] + part[3, 1]) / 2 for r in (1, 2)},
        **{(r, 1): (part[3, 1] + part[6, 1]) / 2 for r in (4, 5)},
    }  # fmt: skip
    assert plan.inferred.keys() == want.keys()
    for c, value in want.items():
        assert plan.inferred[c] == pytest.approx(float(value), abs=1e-6)
    scores = _plan_scores(ie, plan, restorer)
    for c in want.keys() - plan.exact:
        assert float(scores[c]) == pytest.approx(float(want[c]), abs=1e-6)
        assert bool(torch.isnan(restorer.values[c]).all())  # never restored
    # the exact cells are the top of the priority (screened, else inferred, else estimated)
    priority = ie.clone()
    for c in plan.screened:
        priority[c] = part[c]
    for c, value in want.items():
        priority[c] = value
    exact = torch.zeros(7, 2, dtype=torch.bool)
    for c in plan.exact:
        exact[c] = True
    assert len(plan.exact) == 2 and not bool(exact[3, 0])
    assert float(priority[exact].min()) >= float(priority[~exact & moved].max())
    # Without a stride nothing is inferred; a refinement band covering every cell restores
    # the inferred cells on 4 rows, and they are inferred no more.
    assert not _run_policy(ie, moved, _TableRestorer(table, corrupt_rows, 0.0), **kw).inferred
    refined = _run_policy(
        ie, moved, _TableRestorer(table, corrupt_rows, 0.0), stride=3, refine=((9.0, 9.0),), **kw
    )
    assert not refined.inferred
    assert {refined.screen_rows[c] for c in want} == {(0, 1, 2, 3)}


@pytest.mark.parametrize("stride", [1, 2])
def test_policy_replayed_on_a_table_is_adaptive_trace(tiny, stride) -> None:
    # benchmarks/adaptive_policies.py replays the policy on saved per-sample exact values; with
    # the same inputs it must choose and score exactly as adaptive_trace does.
    from mechlin.recall.adaptive_policy import _plan_scores, _run_policy, _TableRestorer
    from mechlin.recall.attribution import estimate_grid
    from mechlin.recall.tracing import prepare_trace

    # screen=9: the tenth cell's estimate is 0 (the last layer at an earlier position), tied
    # with many; its screened value is 0 or -5e-10 by the batch's rounding, which can move it
    # across the refinement's border among the ties.
    kw = dict(kind="resid", n_samples=4, noise=2.0)
    refine = ((0.7, 2.0), (0.35, 0.7))  # two stages on a 2-sample screen
    ad = adaptive_trace(
        tiny, PROMPT, SUBJECT, budget=8, screen=9, screen_samples=2, refine=refine,
        screen_stride=stride, **kw,
    )  # fmt: skip
    # keep_graph=True: the estimate from the recorded corrupted run, as adaptive_trace's (a
    # separate forward's backward may sum in another order: the same estimate only to
    # rounding, and the ranking compared below is exact).
    prep = prepare_trace(
        tiny, PROMPT, SUBJECT, answer=None, window=10, seed=0, corrupted_prompt=None,
        metric="prob", positions=None, layers=None, contrast=None, method="auto",
        keep_graph=True, **kw,
    )  # fmt: skip
    table = prep.engine.row_scores(
        prep.setup, prep.site, prep.cells, prep.positions, prep.clean_states, "prob", 1 << 30
    )
    ie, moved = estimate_grid(prep, "logprob")
    restorer = _TableRestorer(table, prep.corrupt_rows, prep.corrupt_score)
    plan = _run_policy(
        ie, moved, restorer, budget=8, check=0.25, screen=9, screen_rows=(0, 1), rounds=1,
        stop_below=None, total_effect=1.0, seed=0, refine=refine, stride=stride,
    )  # fmt: skip
    assert _cells(ad.exact) == plan.exact and _cells(ad.screened) == set(plan.screened)
    assert _cells(ad.inferred) == set(plan.inferred) and bool(plan.inferred) == (stride > 1)
    only_screened = _cells(ad.screened & ~ad.exact)
    assert {c: len(plan.screen_rows[c]) for c in only_screened} == {
        c: int(ad.samples[c]) for c in only_screened
    }
    assert {len(plan.screen_rows[c]) for c in only_screened} == {2, 4}  # the refinement ran
    assert _cells(ad.checked) == set(plan.sample)
    scores = _plan_scores(ie, plan, restorer)
    assert torch.allclose(scores, ad.scores, atol=1e-6, rtol=0)
    assert restorer.n_restored / table.numel() == pytest.approx(ad.work)


@pytest.mark.parametrize("call_cost", [0.0, 40.0, 1e9])  # alone; the default; all together
@pytest.mark.parametrize("kind", ["resid", "mlp", "attn"])
def test_scattered_cells_equal_the_table(tiny, kind, call_cost, monkeypatch) -> None:
    # Cells at several positions in one engine call: the replay engine groups positions into
    # replays from the group's first position; each value equals the whole table's.
    from mechlin.recall.tracing import prepare_trace

    prep = prepare_trace(
        tiny, PROMPT, SUBJECT, kind=kind, answer=None, window=2, noise=2.0, n_samples=4, seed=0,
        corrupted_prompt=None, metric="prob", positions=None, layers=None, contrast=None,
        method="replay",
    )  # fmt: skip
    prep.engine.call_cost = call_cost
    table = prep.engine.row_scores(
        prep.setup, prep.site, prep.cells, prep.positions, prep.clean_states, "prob", 1 << 30
    )
    starts: list[int] = []  # the first replayed position of each batch
    run_chunk = prep.engine._run_chunk

    def spy(*args, **kwargs):
        starts.append(args[5])  # t
        return run_chunk(*args, **kwargs)

    monkeypatch.setattr(prep.engine, "_run_chunk", spy)
    n, m = len(prep.cells), len(prep.positions)
    picks = [(0, m - 1), (n - 1, 0), (1, 3), (2, 3), (0, 5), (n - 1, m - 2), (1, 5), (0, 3)]
    wanted = [[0, 1, 2, 3], [2, 3], [1], [], [0, 3], [3], [0, 1, 2, 3], [2]]
    for budget in (1 << 30, 1):  # one batch per group; one row per batch
        got = prep.engine.cell_scores(
            prep.setup, prep.site, [prep.cells[r] for r, _ in picks],
            [prep.positions[c] for _, c in picks], wanted, prep.clean_states, "prob", budget,
        )  # fmt: skip
        assert [len(g) for g in got] == [len(w) for w in wanted]
        for (r, c), rows, values in zip(picks, wanted, got, strict=True):
            assert torch.allclose(values, table[r, c, rows], atol=1e-6, rtol=0)
    # the groupings asked for ran: each position alone; every batch from the first position
    at = {prep.positions[c] for (_, c), rows in zip(picks, wanted, strict=True) if rows}
    if call_cost == 0.0:
        assert set(starts) == at
    if call_cost == 1e9:
        assert set(starts) == {min(at)}


def _partitions(items: list[int]):
    if not items:
        yield []
        return
    head, rest = items[0], items[1:]
    for part in _partitions(rest):
        for k in range(len(part)):
            yield [*part[:k], [head, *part[k]], *part[k + 1 :]]
        yield [[head], *part]


def test_merged_positions_are_the_cheapest_grouping() -> None:
    # merge_positions only considers runs of consecutive positions; brute force over every
    # set partition shows no other grouping is cheaper under the same cost model.
    gen = torch.Generator().manual_seed(0)
    n_pos, layer_calls = 12, 6
    for trial in range(40):
        ps = sorted(torch.randperm(n_pos, generator=gen)[: 1 + trial % 6].tolist())
        work = {p: int(torch.randint(0, 60, (1,), generator=gen)) for p in ps}
        call_cost = [0.0, 5.0, 40.0, 1e4][trial % 4]

        def cost(groups, work=work, call_cost=call_cost) -> float:
            return sum(
                call_cost * layer_calls + sum(work[p] for p in g) * (n_pos - min(g)) for g in groups
            )

        got = merge_positions(work, n_pos, layer_calls, call_cost)
        assert [p for g in got for p in g] == ps  # runs of the sorted positions, in order
        assert cost(got) == pytest.approx(min(cost(g) for g in _partitions(ps)))
    assert merge_positions({1: 5, 4: 5}, n_pos, layer_calls, 0.0) == [[1], [4]]
    assert merge_positions({1: 5, 4: 5}, n_pos, layer_calls, 1e4) == [[1, 4]]
    assert merge_positions({}, n_pos, layer_calls, 40.0) == []


@pytest.mark.parametrize("method", ["replay", "packed"])
@pytest.mark.parametrize("kind", ["resid", "mlp"])
def test_cells_on_their_own_rows_equal_the_table(tiny, method, kind) -> None:
    # Adaptive tracing restores each cell of a column on the rows it still lacks, in one
    # engine call (cell_scores); each value equals the whole table's (row_scores).
    from mechlin.recall.tracing import prepare_trace

    prep = prepare_trace(
        tiny, PROMPT, SUBJECT, kind=kind, answer=None, window=2, noise=2.0, n_samples=4, seed=0,
        corrupted_prompt=None, metric="prob", positions=None, layers=None, contrast=None,
        method=method,
    )  # fmt: skip
    table = prep.engine.row_scores(
        prep.setup, prep.site, prep.cells, prep.positions, prep.clean_states, "prob", 1 << 30
    )
    col = len(prep.positions) - 3
    wanted = [[0, 1, 2, 3], [2, 3], [], [1], [0, 3]]
    n = len(prep.cells)  # a cell may come twice (on other rows)
    cells = [prep.cells[k % n] for k in range(len(wanted))]
    for budget in (1 << 30, 1):  # one batch; one row per batch
        got = prep.engine.cell_scores(
            prep.setup, prep.site, cells, [prep.positions[col]] * len(cells), wanted,
            prep.clean_states, "prob", budget,
        )  # fmt: skip
        assert [len(g) for g in got] == [len(w) for w in wanted]
        for k, (rows, values) in enumerate(zip(wanted, got, strict=True)):
            assert torch.allclose(values, table[k % n, col, rows], atol=1e-6, rtol=0)


def test_cells_that_cannot_move_the_metric_are_not_restored(tiny) -> None:
    # The last layer's state before the last token feeds nothing the metric reads, and states
    # before the subject are not corrupted: their exact effect is 0 (to the readout's rounding).
    # The adaptive trace spends none of its screen, ranking or random sample on them while
    # other cells remain, and scores them as the corrupted run.
    kw = dict(kind="resid", n_samples=4, noise=2.0)
    exact = causal_trace(tiny, PROMPT, SUBJECT, **kw)
    s0 = exact.subject_span[0]
    still = torch.zeros_like(exact.scores, dtype=torch.bool)
    still[-1, :-1] = True
    still[:, :s0] = True
    assert torch.allclose(exact.scores[still], torch.tensor(exact.corrupt_score), atol=1e-7, rtol=0)
    n_moving = int((~still).sum())
    ad = adaptive_trace(tiny, PROMPT, SUBJECT, budget=n_moving, screen=1.0, **kw)
    assert ad.n_screened == n_moving and not bool((ad.screened & still).any())
    assert bool(ad.exact[~still].all()) and not bool(ad.exact[still].any())
    # Scored as the corrupted run to float32 rounding, not bit for bit: the estimate
    # linearises the log-probability (metric "prob" with a screen), so an unmoved cell scores
    # corrupt_score + mean(exp(log p) - p) over the noise samples, and exp(log p) is p only to
    # float32 rounding. log p is off by up to ~1 ulp of |log p| (~5 here), i.e. eps * |log p|
    # relative to p; exp, the mean and the sum add a few ulps of p. An Intel Xeon's kernels
    # gave 2 ulps of p off; this bound is 8 eps * |log p| (~60 ulps of p, 3e-8 absolute,
    # against indirect effects of order 1e-5 to 1e-4 where the corruption reaches).
    eps = torch.finfo(torch.float32).eps
    rtol = 8 * eps * max(1.0, abs(math.log(ad.corrupt_score)))
    torch.testing.assert_close(
        ad.scores[still], torch.full_like(ad.scores[still], ad.corrupt_score), rtol=rtol, atol=0
    )
    # A budget beyond them is the whole grid; the cells it fills up with are not part of the
    # random sample (they would dilute the estimate's measured error).
    whole = adaptive_trace(tiny, PROMPT, SUBJECT, budget=1.0, **kw)
    assert bool(whole.exact.all()) and not bool((whole.checked & still).any())
