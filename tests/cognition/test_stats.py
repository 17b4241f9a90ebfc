"""Honest statistics for cognition vs expression: leakage-free pools, cross-fitted probes,
bootstrap intervals that cover, permutation tests that ignore what they should."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from jaxtyping import TypeCheckError
from scipy import stats as sps
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mechlin import viz
from mechlin.cognition.stats import (
    CrossFit,
    assert_disjoint,
    bootstrap_ci,
    cell_bootstrap,
    crossfit_cognition,
    curves_vs_step,
    disjoint_pool,
    normalise_text,
    paired_delta,
    pca_grid,
    stratified_folds,
    stratified_permutation_corr,
    umap_view,
)
from mechlin.datasets.mcq import MCQDataset, load_mcq
from mechlin.errors import (
    ArgumentError,
    ArgumentTypeError,
    EmptyInputError,
    MechlinError,
    OutOfRangeError,
)

EVALS = ("arc_easy", "arc_challenge", "openbookqa", "commonsenseqa")


def _planted(n: int = 200, n_layers: int = 5, d: int = 32, at: int = 3, strength: float = 2.0):
    """States where only layer ``at`` carries the answer (a shift along the answer's axis)."""
    gen = torch.Generator().manual_seed(0)
    answers = torch.randint(0, 4, (n,), generator=gen)
    X = torch.randn(n_layers, n, d, generator=gen)  # (layer, item, d)
    X[at, torch.arange(n), answers] += strength
    return X, answers, torch.full((n,), 4)


# ---------------------------------------------------------------- disjoint pools


def test_normalised_text_ignores_case_whitespace_and_punctuation() -> None:
    assert normalise_text("  Which  is a\tWELL-known  fact? ") == normalise_text(
        "which is a well known fact"
    )
    assert normalise_text("Ｗｈｉｃｈ") == "which"  # NFKC: full-width letters
    assert normalise_text("a cat") != normalise_text("a cow")


def test_shipped_pool_is_disjoint_from_the_shipped_eval_sets() -> None:
    pool = load_mcq("arc_easy_test")
    evals = [load_mcq(name) for name in EVALS]
    kept, report = disjoint_pool(pool, *evals)
    # measured: no overlap at all, by id or by normalised stem, with any of the four sets
    assert report.n_by_id == (0, 0, 0, 0) and report.n_by_text == (0, 0, 0, 0)
    assert report.n_kept == len(kept) == len(pool) == 2376
    assert report.evals == EVALS and report.n_eval == (570, 299, 500, 1221)
    assert_disjoint(kept, *evals)
    assert "0 by id, 0 by text" in report.summary()


def test_planted_duplicates_are_dropped_and_named() -> None:
    ev = load_mcq("arc_easy").subset(range(40))
    base = load_mcq("arc_easy_test").subset(range(60))
    a, b, c = ev[0], ev[1], ev[2]
    planted = (
        dataclasses.replace(a, id="copy-case", question="  " + a.question.upper() + "  "),
        dataclasses.replace(b, id="copy-space", question=b.question.replace(" ", "\n  ") + " ?!"),
        dataclasses.replace(c, question="A different question entirely, same id"),
        # same stem, other choices: dropped by "question", kept by "question_choices"
        dataclasses.replace(a, id="same-stem", choices=("x", "y", "z", "w")),
    )
    pool = MCQDataset("pool", base.items + planted)
    kept, report = disjoint_pool(pool, ev)
    assert set(report.dropped_ids) == {"copy-case", "copy-space", c.id, "same-stem"}
    assert report.n_by_id == (1,) and report.n_by_text == (3,)
    assert kept.ids == base.ids and kept.name == "pool"
    assert ("copy-case", "arc_easy", a.id, "text") in report.matches
    assert len(report.to_frame()) == 4
    with pytest.raises(ArgumentError, match="copy-case"):
        assert_disjoint(pool, ev)

    kept2, report2 = disjoint_pool(pool, ev, match="question_choices")
    assert "same-stem" in kept2.ids and "same-stem" not in report2.dropped_ids
    assert set(report2.dropped_ids) == {"copy-case", "copy-space", c.id}
    assert_disjoint(kept2, ev, match="question_choices")
    assert report2.match == "question_choices"


def test_disjoint_pool_refuses_bad_inputs() -> None:
    pool = load_mcq("arc_challenge").subset(range(5))
    with pytest.raises(EmptyInputError, match="at least one evaluation set"):
        disjoint_pool(pool)
    # (under the test run's jaxtyping hook, beartype refuses the type first)
    with pytest.raises((ArgumentTypeError, TypeCheckError), match="MCQDataset"):
        disjoint_pool(pool, ["not", "a", "dataset"])
    with pytest.raises((ArgumentTypeError, TypeCheckError), match="MCQDataset"):
        assert_disjoint("arc_easy", pool)
    with pytest.raises(ArgumentError, match="match='stem'"):
        disjoint_pool(pool, pool, match="stem")


# ---------------------------------------------------------------- cross-fitted cognition


def test_stratified_folds_spread_every_letter_evenly() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    fold = stratified_folds(labels, folds=5, seed=3)
    counts = torch.zeros(3, 5, dtype=torch.long)
    counts.index_put_((labels, fold), torch.ones(100, dtype=torch.long), accumulate=True)
    assert (counts.max(1).values - counts.min(1).values <= 1).all()
    assert torch.equal(fold, stratified_folds(labels, folds=5, seed=3))


def test_planted_signal_is_found_at_its_layer_and_by_nested_cv() -> None:
    X, answers, n_choices = _planted()
    cf = crossfit_cognition(X, answers, n_choices, layer=3, pca_dim=16, n_boot=500)
    assert cf.correct.shape == (5, 200) and cf.correct.dtype == torch.bool
    assert cf.chance == pytest.approx(0.25)
    assert cf.cognition > 0.65 and cf.cognition_ci[0] > 0.5
    for la in (0, 1, 2, 4):  # no signal there: the interval covers chance
        assert float(cf.acc_lo[la]) <= 0.25 <= float(cf.acc_hi[la]), la
    assert cf.chosen_layers == (3,) * 5
    assert cf.nested_acc == pytest.approx(cf.cognition)  # every fold chose layer 3
    # shuffled labels know nothing, even where the signal is
    assert float(cf.shuffled_lo[3]) <= 0.25 <= float(cf.shuffled_hi[3])
    assert float(cf.shuffled_acc.mean()) < 0.33
    # fixed at a layer without signal: near chance, though nested CV still finds layer 3
    elsewhere = crossfit_cognition(X, answers, n_choices, layer=1, pca_dim=16, nested=False)
    assert elsewhere.cognition < 0.35 and math.isnan(elsewhere.nested_acc)
    assert elsewhere.nested_correct is None and elsewhere.chosen_layers == ()


def _leaky_screening_accuracy(X: np.ndarray, y: np.ndarray, fold: np.ndarray, keep: int) -> float:
    """The mistake: pick the features most related to the labels on ALL items, then CV."""
    f_stat, _ = sps.f_oneway(*[X[y == c] for c in np.unique(y)])
    top = np.argsort(-np.nan_to_num(f_stat))[:keep]
    right = 0
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(X[tr][:, top], y[tr])
        right += int((clf.predict(X[te][:, top]) == y[te]).sum())
    return right / len(y)


def test_noise_is_at_chance_and_the_cross_fit_does_not_leak() -> None:
    gen = torch.Generator().manual_seed(1)
    n, d, n_layers = 120, 600, 12  # d >> n
    X = torch.randn(n_layers, n, d, generator=gen)
    answers = torch.randint(0, 4, (n,), generator=gen)
    n_choices = torch.full((n,), 4)
    cf = crossfit_cognition(X, answers, n_choices, layer=5, pca_dim=32, n_boot=500)
    lo, hi = cf.cognition_ci
    assert lo <= cf.chance <= hi
    assert abs(float(cf.acc.mean()) - 0.25) < 0.05  # chance on average over the layers
    assert cf.nested_lo <= 0.25 <= cf.nested_hi
    # the plain maximum over layers is optimistic on noise; the summary labels it so
    assert cf.max_acc[0] > float(cf.acc.mean()) + 0.04
    assert "optimistic" in cf.summary()
    # a leaky pipeline on the same noise (supervised feature screening on all items) looks
    # like strong cognition; the cross-fit does not
    leaky = _leaky_screening_accuracy(X[5].numpy(), answers.numpy(), cf.fold_of.numpy(), 20)
    assert leaky > 0.5 > hi


def _sklearn_reference(X, answers, n_choices, fold_of, layer, pca_dim, C) -> np.ndarray:
    """An obviously-correct slow reference: sklearn PCA, StandardScaler, OvR balanced L2."""
    Xl, y, nc = X[layer].double().numpy(), answers.numpy(), n_choices.numpy()
    n_cls = int(nc.max())
    right = np.zeros(len(y), dtype=bool)
    for f in np.unique(fold_of.numpy()):
        tr, te = fold_of.numpy() != f, fold_of.numpy() == f
        k = min(pca_dim, int(tr.sum()) - 1, Xl.shape[1])
        pca = PCA(n_components=k, svd_solver="full").fit(Xl[tr])
        scaler = StandardScaler().fit(pca.transform(Xl[tr]))
        Ztr, Zte = scaler.transform(pca.transform(Xl[tr])), scaler.transform(pca.transform(Xl[te]))
        scores = np.full((int(te.sum()), n_cls), -np.inf)
        for c in range(n_cls):
            pos = y[tr] == c
            if 0 < pos.sum() < len(pos):
                clf = LogisticRegression(C=C, class_weight="balanced", tol=1e-10, max_iter=10_000)
                scores[:, c] = clf.fit(Ztr, pos).decision_function(Zte)
        scores[np.arange(n_cls)[None] >= nc[te][:, None]] = -np.inf
        right[te] = scores.argmax(1) == y[te]
    return right


def test_cross_fit_equals_an_sklearn_pipeline_fold_by_fold() -> None:
    X, answers, _ = _planted(n=120, n_layers=3, d=12, at=1, strength=1.0)
    n_choices = torch.where(torch.arange(120) % 7 == 0, 5, 4)  # some items with 5 letters
    cf = crossfit_cognition(X, answers, n_choices, layer=1, pca_dim=8, C=0.5, nested=False)
    for layer in (0, 1):
        ref = _sklearn_reference(X, answers, n_choices, cf.fold_of, layer, 8, 0.5)
        assert (cf.correct[layer].numpy() == ref).mean() >= 0.99, layer  # ties aside: equal


def test_cross_fit_result_round_trips(tmp_path) -> None:
    X, answers, n_choices = _planted(n=60, n_layers=3, d=8, at=2)
    for nested in (True, False):
        cf = crossfit_cognition(X, answers, n_choices, layer=2, folds=3, n_boot=50, nested=nested)
        back = CrossFit.load(cf.save(tmp_path / f"cf{nested}.pt"))
        assert back.summary() == cf.summary()
        assert torch.equal(back.correct, cf.correct) and back.chosen_layers == cf.chosen_layers
        assert len(cf.to_frame()) == 3 and ("nested CV" in cf.summary()) == nested
        viz.close(cf.plot())
    assert cf.pca_dim == 8  # PCA 64 reduced to d = 8 (the training folds hold 40 rows)


def test_cross_fit_refuses_bad_inputs() -> None:
    X, answers, n_choices = _planted(n=40, n_layers=2, d=4, at=1)
    cases = [
        (dict(layer=2), OutOfRangeError, "layer 2 is out of range"),
        (dict(layer=0, folds=1), ArgumentError, "folds=1"),
        (dict(layer=0, folds=30), EmptyInputError, "too few for 30 folds"),
        (dict(layer=0, n_boot=0), ArgumentError, "n_boot=0"),
        (dict(layer=0, C=0.0), ArgumentError, "C=0.0"),
        (dict(layer=0, level=1.0), ArgumentError, "level=1.0"),
        (dict(layer=0, pca_dim=0), ArgumentError, "pca_dim=0"),
    ]
    for kwargs, error, fragment in cases:
        with pytest.raises(error, match=fragment):
            crossfit_cognition(X, answers, n_choices, **kwargs)
    with pytest.raises(OutOfRangeError, match="is not one of its 3 letters"):
        crossfit_cognition(X, answers, torch.full((40,), 3), layer=0)
    bad = X.clone()
    bad[0, 0, 0] = math.nan
    with pytest.raises(ArgumentError, match="NaN"):
        crossfit_cognition(bad, answers, n_choices, layer=0)
    with pytest.raises((ArgumentError, TypeCheckError)):
        crossfit_cognition(X, answers[:-1], n_choices, layer=0)


# ---------------------------------------------------------------- bootstrap, permutations


def test_bootstrap_interval_covers_a_bernoulli_mean_about_95_percent() -> None:
    rng = np.random.default_rng(0)
    p, n, repeats = 0.3, 100, 300
    draws = torch.from_numpy(rng.random((repeats, n)) < p)  # (repeat, item)
    lo, hi = bootstrap_ci(draws, n_boot=400, seed=1)
    assert lo.shape == hi.shape == (repeats,)
    coverage = float(((lo <= p) & (p <= hi)).double().mean())
    assert 0.89 <= coverage <= 0.99, coverage
    # a narrower level covers less
    lo80, hi80 = bootstrap_ci(draws, n_boot=400, seed=1, level=0.8)
    assert float(((lo80 <= p) & (p <= hi80)).double().mean()) < coverage


def test_bootstrap_ci_edge_cases_and_bad_inputs() -> None:
    lo, hi = bootstrap_ci(torch.ones(20), n_boot=50)
    assert float(lo) == float(hi) == 1.0
    with pytest.raises(EmptyInputError):
        bootstrap_ci(torch.zeros(3, 0))
    with pytest.raises(ArgumentError, match="NaN"):
        bootstrap_ci(torch.tensor([0.5, math.nan]))
    with pytest.raises(ArgumentError, match=r"level=1\.5"):
        bootstrap_ci(torch.ones(5), level=1.5)
    with pytest.raises((MechlinError, TypeCheckError)):
        bootstrap_ci([1, 0, 1])


def test_paired_delta_of_identical_vectors_is_zero_with_p_one() -> None:
    a = torch.from_numpy(np.random.default_rng(2).random(50) < 0.6)
    d = paired_delta(a, a.clone())
    assert d.delta == 0 and d.lo == 0 and d.hi == 0 and d.p_value == 1.0 and d.n_differ == 0


def test_paired_delta_is_the_exact_sign_test_and_finds_a_real_gain() -> None:
    rng = np.random.default_rng(3)
    b = torch.from_numpy(rng.random(80) < 0.4)
    a = b.clone()
    a[(~b).nonzero().flatten()[:12]] = True  # 12 gains ...
    a[b.nonzero().flatten()[:2]] = False  # ... and 2 losses
    d = paired_delta(a, b, n_perm=2**14)  # 14 differing items: all 2^14 flips enumerated
    gains, losses = int((a & ~b).sum()), int((~a & b).sum())
    assert (gains, losses) == (12, 2) and d.exact and d.n_differ == 14 and d.p_value < 0.05
    assert d.p_value == pytest.approx(sps.binomtest(gains, gains + losses).pvalue, abs=1e-12)
    assert d.delta == pytest.approx((gains - losses) / 80) and d.lo > 0
    mc = paired_delta(a, b, n_perm=500)  # Monte Carlo: close to the exact value
    assert not mc.exact and abs(mc.p_value - d.p_value) < 0.02
    back = paired_delta(b, a, n_perm=2**14)
    assert back.p_value == d.p_value and back.delta == -d.delta
    with pytest.raises((ArgumentError, TypeCheckError)):
        paired_delta(a, b[:-1])
    with pytest.raises(EmptyInputError):
        paired_delta(a[:0], b[:0])


def test_stratified_permutation_ignores_a_correlation_made_by_stratum_means() -> None:
    rng = np.random.default_rng(4)
    strata = [ds for ds in ("arc_e", "arc_c", "obqa", "csqa") for _ in range(6)]
    level = np.repeat([0.3, 0.45, 0.6, 0.8], 6)  # easy sets are easy on both axes
    x = torch.from_numpy(level + rng.normal(0, 0.03, 24))
    y = torch.from_numpy(level + rng.normal(0, 0.03, 24))  # no link within a set
    res = stratified_permutation_corr(x, y, strata, n_perm=2000, n_boot=300)
    assert res.r > 0.9 and res.p_unstratified < 0.01
    assert res.p_value > 0.2 and abs(res.r_within) < 0.5
    assert res.n_cells == 24 and res.n_strata == 4 and res.lo <= res.r <= res.hi
    # positive control: a link within every set is found
    y2 = torch.from_numpy(level + 0.8 * (x.numpy() - level) + rng.normal(0, 0.01, 24))
    res2 = stratified_permutation_corr(x, y2, strata, n_perm=2000, n_boot=300)
    assert res2.p_value < 0.01 and res2.r_within > 0.8
    # strata as a tensor give the same answer
    codes = torch.tensor([i // 6 for i in range(24)])
    assert stratified_permutation_corr(x, y, codes, n_perm=2000, n_boot=300) == res


def test_stratified_permutation_corr_refuses_bad_inputs() -> None:
    x = torch.arange(6.0)
    with pytest.raises(ArgumentError, match="6 cells"):
        stratified_permutation_corr(x, x, ["a", "b"])
    with pytest.raises(EmptyInputError, match="at least 3"):
        stratified_permutation_corr(x[:2], x[:2], ["a", "b"])
    with pytest.raises(ArgumentError, match="constant"):
        stratified_permutation_corr(x, torch.ones(6), ["a"] * 6)
    with pytest.raises((ArgumentError, TypeCheckError)):
        stratified_permutation_corr(x, x[:5], ["a"] * 6)
    with pytest.raises(ArgumentError, match="n_perm=0"):
        stratified_permutation_corr(x, x, ["a"] * 6, n_perm=0)


def test_cell_bootstrap_interval_of_a_correlation_over_cells() -> None:
    rng = np.random.default_rng(5)
    acc = np.linspace(0.3, 0.9, 6)
    cog = [torch.from_numpy(rng.random(150) < p) for p in acc]
    expr = [c & torch.from_numpy(rng.random(150) < 0.8) for c in cog]  # expression <= cognition
    res = cell_bootstrap(cog, expr, n_boot=300)
    assert res.r > 0.9 and res.lo <= res.r <= res.hi and res.lo > 0.5 and res.n_cells == 6
    with pytest.raises(ArgumentError, match="same items"):
        cell_bootstrap(cog, [e[:-1] for e in expr])
    with pytest.raises(ArgumentError, match="6 cognition cells but 5"):
        cell_bootstrap(cog, expr[:5])
    with pytest.raises(EmptyInputError):
        cell_bootstrap(cog[:2], expr[:2])


# ---------------------------------------------------------------- views


def test_pca_grid_has_a_panel_per_row_and_layer() -> None:
    X, answers, _ = _planted(n=60, n_layers=6, d=10)
    states = {("arc", "base"): X, ("arc", "sft"): X * 2, ("obqa", "base"): X[:, :40]}
    labels = {"arc": answers, "obqa": answers[:40]}
    fig = pca_grid(states, labels)
    axes = fig.get_axes()
    assert len(axes) == 3 * 4  # default: 4 layers spread over the depth (0, 2, 3, 5)
    assert axes[0].get_title().startswith("arc / base, layer 0")
    assert "layer 5" in axes[3].get_title()
    viz.close(fig)
    fig = pca_grid(states, labels, layers=[3])
    assert len(fig.get_axes()) == 3
    viz.close(fig)
    with pytest.raises(OutOfRangeError):
        pca_grid(states, labels, layers=[6])
    with pytest.raises(ArgumentError, match="no labels for dataset 'obqa'"):
        pca_grid(states, {"arc": answers})
    with pytest.raises(ArgumentError, match="one letter per item"):
        pca_grid(states, {"arc": answers, "obqa": answers})
    with pytest.raises(EmptyInputError):
        pca_grid({}, labels)


def test_curves_vs_step_draws_bands() -> None:
    steps = [0, 100, 200]
    band = (torch.tensor([0.5, 0.6, 0.6]), torch.tensor([0.4, 0.5, 0.5]), torch.tensor([0.6] * 3))
    fig = curves_vs_step(steps, band, {"letter": band, "acc": band}, chance=0.25)
    ax = fig.get_axes()[0]
    assert len(ax.get_lines()) == 4  # cognition, two metrics, chance
    viz.close(fig)
    with pytest.raises(ArgumentError, match="3 values"):
        curves_vs_step(steps, (band[0][:2], band[1], band[2]), {})
    with pytest.raises(ArgumentTypeError, match="value, lo, hi"):
        curves_vs_step(steps, band[:2], {})


def test_umap_view_is_seeded() -> None:
    X, answers, _ = _planted(n=80, n_layers=4, d=10)
    fig = umap_view(X[3], answers, seed=0)
    ax = fig.get_axes()[0]
    pts = np.concatenate([c.get_offsets() for c in ax.collections])
    assert pts.shape == (80, 2) and "UMAP" in ax.get_title()
    viz.close(fig)
    with pytest.raises((ArgumentError, TypeCheckError)):
        umap_view(X[3], answers[:-1])
