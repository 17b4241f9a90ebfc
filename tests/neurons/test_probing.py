"""Sparse probes against independent references: scikit-learn, TransformerLens, brute force."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)
from transformer_lens.tools.analysis.sparse_probing import fit_sparse_probe

from mechlin._logreg import fit_l1, fit_l2
from mechlin._splits import split_indices
from mechlin.neurons.probing import (
    ProbeInputError,
    ProbeSweep,
    binary_metrics,
    fit_probe,
    neuron_scores,
    probe_sweep,
    sparse_probe,
)


def _data(n: int = 400, d: int = 60, seed: int = 0, planted: int = 7, strength: float = 4.0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.rand(n, generator=g) < 0.3  # imbalanced, like most features
    X[:, planted] += strength * y
    return X, y


@pytest.mark.parametrize("k", [1, 3, 20])
def test_l2_fit_equals_sklearn(k: int) -> None:
    X, y = _data(strength=1.0)
    w, b = fit_l2(X[:, :k][None], y)
    ref = LogisticRegression(C=1.0, class_weight="balanced", tol=1e-12, max_iter=100_000)
    ref.fit(X[:, :k].numpy(), y.numpy())
    np.testing.assert_allclose(w[0].numpy(), ref.coef_[0], atol=2e-5)
    np.testing.assert_allclose(float(b[0]), ref.intercept_[0], atol=2e-5)


def test_l1_fit_matches_sklearn_support() -> None:
    X, y = _data(strength=1.0)
    w, _ = fit_l1(X, y, C=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LogisticRegression(
            C=0.1, l1_ratio=1.0, solver="saga", class_weight="balanced", tol=1e-10, max_iter=100_000
        )
        ref.fit(X.numpy(), y.numpy())
    np.testing.assert_allclose(w.numpy(), ref.coef_[0], atol=5e-3)
    assert set(np.nonzero(ref.coef_[0])[0]) >= {7}
    assert int(torch.argmax(w.abs())) == int(np.argmax(np.abs(ref.coef_[0])))


def test_metrics_equal_sklearn_including_ties() -> None:
    g = torch.Generator().manual_seed(3)
    y = torch.rand(300, generator=g) < 0.4
    logits = torch.round(torch.randn(300, generator=g, dtype=torch.float64) + y * 1.0, decimals=1)
    m = binary_metrics(logits, y)
    pred = (logits > 0).numpy()
    assert m["f1"] == pytest.approx(f1_score(y.numpy(), pred))
    assert m["precision"] == pytest.approx(precision_score(y.numpy(), pred))
    assert m["recall"] == pytest.approx(recall_score(y.numpy(), pred))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y.numpy(), pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y.numpy(), logits.numpy()))


def test_f_stat_equals_sklearn_f_classif() -> None:
    X, y = _data()
    F, _ = f_classif(X.numpy(), y.numpy())
    np.testing.assert_allclose(neuron_scores(X, y, "f_stat").numpy(), F, rtol=1e-8)


def test_mean_diff_probe_equals_transformer_lens_fit_sparse_probe() -> None:
    """Same split (TL's), same selection, same objective: same neurons, weights and F1."""
    X, y = _data(strength=1.5)
    for k in (1, 4):
        tl = fit_sparse_probe(X, y, k=k, l2_strength=1.0, seed=5)
        train, test = tl.train_indices, tl.test_indices
        ranking = torch.argsort(neuron_scores(X[train], y[train], "mean_diff"), descending=True)
        assert set(ranking[:k].tolist()) == set(tl.selected_features.tolist())
        # TL: mean(s_i loss_i) + l2/2 ||w||^2  ==  sklearn's objective with C = 1 / (l2 n_train)
        coef, intercept, m = fit_probe(
            X, y, tl.selected_features, train, test, C=1.0 / train.numel()
        )
        np.testing.assert_allclose(coef.numpy(), tl.coefficients.numpy(), atol=1e-6)
        assert intercept == pytest.approx(float(tl.intercept), abs=1e-6)
        assert m["f1"] == pytest.approx(tl.metrics.f1)
        assert m["roc_auc"] == pytest.approx(tl.metrics.roc_auc)


@pytest.mark.parametrize("method", ["mean_diff", "f_stat", "mi", "l1", "optimal"])
def test_planted_neuron_found_at_k1_with_f1_one(method: str) -> None:
    X, y = _data(strength=12.0)  # the planted neuron separates the classes perfectly
    r = sparse_probe(X, y.long(), k=1, method=method)  # type: ignore[arg-type]
    assert r.neurons.tolist() == [7]
    assert r.f1 == 1.0
    assert r.mcc == pytest.approx(1.0)


def test_shuffled_labels_give_chance_f1() -> None:
    X, y = _data(strength=4.0)
    s = probe_sweep(X, y.long(), ks=(1, 4, 16), n_shuffles=20)
    assert s.at(1) > 0.9
    # a predictor that ignores the input scores at most the F1 of always saying "positive"
    base_rate = float(y.double().mean())
    always_positive = 2 * base_rate / (1 + base_rate)
    assert float(s.shuffled_f1.mean()) < always_positive + 0.05
    assert float(s.shuffled_f1.mean()) < s.at(1) - 0.4


def test_random_rotation_control_hurts_a_basis_aligned_feature() -> None:
    X, y = _data(strength=4.0)
    s = probe_sweep(X, y.long(), ks=(1, 4), n_rotations=5)
    # the planted neuron is one basis vector: after a rotation no single unit reads it as well
    assert float(s.rotated_f1[:, 0].mean()) < s.at(1) - 0.1


def test_no_test_example_leaks_into_selection_or_fitting() -> None:
    X, y = _data(strength=1.0)
    r = sparse_probe(X, y.long(), k=5, method="mean_diff")
    X2 = X.clone()
    X2[r.test_idx] = torch.randn(r.test_idx.numel(), X.shape[1], dtype=torch.float64) * 100
    for method in ("mean_diff", "f_stat", "mi", "l1", "optimal"):
        a = sparse_probe(X, y.long(), k=2, method=method)  # type: ignore[arg-type]
        b = sparse_probe(X2, y.long(), k=2, method=method)  # type: ignore[arg-type]
        assert a.neurons.tolist() == b.neurons.tolist(), method
        torch.testing.assert_close(a.coef, b.coef)
    assert not set(r.train_idx.tolist()) & set(r.test_idx.tolist())


def test_exhaustive_optimal_pair_beats_greedy_and_equals_brute_force() -> None:
    g = torch.Generator().manual_seed(1)
    n = 300
    y = torch.rand(n, generator=g) < 0.5
    shared = torch.randn(n, generator=g, dtype=torch.float64) * 3
    X = torch.randn(n, 12, generator=g, dtype=torch.float64)
    X[:, 0] = shared + 0.8 * y  # weak alone, perfect together with neuron 1
    X[:, 1] = shared
    X[:, 2] += 1.2 * y  # the best single neuron by mean difference
    X[:, 3] += 1.0 * y
    r = sparse_probe(X, y.long(), k=2, method="optimal")
    greedy = sparse_probe(X, y.long(), k=2, method="mean_diff")
    assert set(r.neurons.tolist()) == {0, 1}
    assert r.f1 > greedy.f1
    # brute force: scikit-learn's balanced logistic loss of every pair on the training rows
    train = r.train_idx
    best, best_loss = None, np.inf
    for pair in itertools.combinations(range(12), 2):
        clf = LogisticRegression(C=1.0, class_weight="balanced", tol=1e-10, max_iter=10_000)
        Xp = X[train][:, list(pair)].numpy()
        clf.fit(Xp, y[train].numpy())
        z = Xp @ clf.coef_[0] + clf.intercept_[0]
        t = y[train].numpy() * 2 - 1
        sw = np.where(t > 0, len(t) / (2 * (t > 0).sum()), len(t) / (2 * (t < 0).sum()))
        loss = 0.5 * (clf.coef_**2).sum() + (sw * np.logaddexp(0, -t * z)).sum()
        if loss < best_loss:
            best, best_loss = set(pair), loss
    assert set(r.neurons.tolist()) == best


def test_mip_finds_three_jointly_needed_neurons() -> None:
    g = torch.Generator().manual_seed(2)
    n = 240
    X = torch.randn(n, 20, generator=g, dtype=torch.float64)
    y = (X[:, 4] + X[:, 9] + X[:, 15]) > 0
    r = sparse_probe(X, y.long(), k=3, method="optimal", split="stratified")
    assert set(r.neurons.tolist()) == {4, 9, 15}
    assert r.status == "optimal"


def test_sweep_matches_single_probes_and_round_trips(tmp_path) -> None:  # type: ignore[no-untyped-def]
    X, y = _data(strength=1.0)
    s = probe_sweep(
        X, y.long(), ks=(1, 2, 3, 8, 12, 100), methods=("mean_diff", "optimal"), time_limit=5.0
    )
    assert s.ks == (1, 2, 3, 8, 12)  # 100 > 60 neurons: dropped and noted
    assert any("k=100" in n for n in s.notes)
    for k in (1, 8):
        assert s.at(k) == pytest.approx(sparse_probe(X, y.long(), k=k).f1)
    assert np.isnan(s.at(12, "optimal"))
    s.save(tmp_path / "s.pt")
    back = ProbeSweep.load(tmp_path / "s.pt")
    torch.testing.assert_close(back.f1, s.f1, equal_nan=True)
    fig = s.plot()
    assert len(fig.axes[0].lines) == 2


def test_paper_split_equals_sklearn_train_test_split() -> None:
    from sklearn.model_selection import train_test_split

    y = torch.arange(101) % 3 == 0
    train, test = split_indices(y, split="paper", seed=42)
    ref_train, ref_test = train_test_split(np.arange(101), test_size=0.3, random_state=42)
    assert train.tolist() == sorted(ref_train.tolist())
    assert test.tolist() == sorted(ref_test.tolist())


def test_splits() -> None:
    y = torch.arange(100) % 4 == 0
    train, test = split_indices(y, split="stratified", seed=1)
    assert int(y[test].sum()) == round(0.3 * 25)
    groups = torch.arange(100) // 10
    train, test = split_indices(y, split="grouped", groups=groups)
    assert not set(groups[train].tolist()) & set(groups[test].tolist())
    with pytest.raises(ProbeInputError, match="groups="):
        split_indices(y, split="grouped")


def test_bad_inputs() -> None:
    X, y = _data()
    with pytest.raises(ProbeInputError, match="one class only"):
        sparse_probe(X, torch.zeros(400, dtype=torch.long), k=1)
    with pytest.raises(ProbeInputError, match="between 1 and"):
        sparse_probe(X, y.long(), k=61)
    with pytest.raises(ProbeInputError, match="training examples"):
        sparse_probe(X[:20], y[:20].long() | (torch.arange(20) < 3), k=15, split="stratified")
    Xn = X.clone()
    Xn[5, 3] = float("nan")
    with pytest.raises(ProbeInputError, match="NaN"):
        sparse_probe(Xn, y.long(), k=1)
    with pytest.raises(ProbeInputError, match="positive="):
        sparse_probe(X, torch.arange(400) % 3, k=1)
    with pytest.raises(ProbeInputError, match="k <= 8"):
        sparse_probe(X, y.long(), k=9, method="optimal")
    r = sparse_probe(X, torch.arange(400) % 3, k=1, positive=2)
    assert r.positive == 2
