"""Cognition probes: the PCA is a plain SVD, the probe is scikit-learn's, splits are grouped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jaxtyping import TypeCheckError
from sklearn.linear_model import LogisticRegression

from mechlin.cognition.probes import (
    CognitionProbe,
    _features,
    fit_ovr,
    pca_basis,
    probe_cognition,
    split_items,
)
from mechlin.datasets.mcq import load_mcq
from mechlin.errors import ArgumentError, EmptyInputError, OutOfRangeError


def _short(name: str, n: int) -> object:
    ds = load_mcq(name)
    keep = [i for i, it in enumerate(ds) if len(it.question) + sum(map(len, it.choices)) < 120]
    return ds.subset(keep[:n])


def test_pca_equals_plain_svd() -> None:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(2, 30, 8, generator=gen, dtype=torch.float64) * torch.arange(1, 9)
    mean, basis = pca_basis(X, 3)
    for layer in range(2):
        A = X[layer].numpy()
        centred = A - A.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        ours = basis[layer].numpy()
        # same subspace, directions equal up to sign
        for j in range(3):
            assert abs(abs(ours[:, j] @ vt[j]) - 1) < 1e-10
        np.testing.assert_allclose(mean[layer].numpy(), A.mean(0))


def test_ovr_probe_equals_sklearn() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 5))
    y = rng.integers(0, 4, size=60)
    X[np.arange(60), y] += 1.5  # some signal
    W, B = fit_ovr(torch.from_numpy(X)[None], torch.from_numpy(y), 4, C=0.7)
    for c in range(4):
        sk = LogisticRegression(C=0.7, class_weight="balanced", tol=1e-10, max_iter=10_000)
        sk.fit(X, y == c)
        np.testing.assert_allclose(W[c, 0].numpy(), sk.coef_[0], atol=1e-4)
        np.testing.assert_allclose(float(B[c, 0]), sk.intercept_[0], atol=1e-4)


def test_absent_class_is_never_predicted() -> None:
    X = torch.randn(1, 10, 3, dtype=torch.float64)
    y = torch.tensor([0, 1] * 5)
    W, B = fit_ovr(X, y, 3, C=1.0)
    assert B[2, 0] == -float("inf") and bool((W[2] == 0).all())


def test_features_fit_on_training_rows_only() -> None:
    X = torch.randn(1, 20, 6, dtype=torch.float64)
    train = torch.arange(10)
    F, k = _features(X, train, pca_dim=3)
    moved = X.clone()
    moved[:, 10:] += 100.0  # test rows change; training statistics must not
    G, _ = _features(moved, train, pca_dim=3)
    torch.testing.assert_close(F[:, :10], G[:, :10])
    assert k == 3
    torch.testing.assert_close(F[0, :10].mean(0), torch.zeros(3, dtype=torch.float64))


def test_split_items_is_a_seeded_partition() -> None:
    tr, va, te = split_items(50, test_fraction=0.3, val_fraction=0.2, seed=3)
    assert sorted(torch.cat([tr, va, te]).tolist()) == list(range(50))
    assert (len(te), len(va)) == (15, 10)
    again = split_items(50, test_fraction=0.3, val_fraction=0.2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip((tr, va, te), again, strict=True))


@pytest.mark.parametrize("probe", ["letter", "option"])
def test_probe_cognition_end_to_end(tiny: object, probe: str, tmp_path: object) -> None:
    ds = _short("arc_easy", 24)
    r = probe_cognition(tiny, ds, probe=probe, pca_dim=8, progress=False, seed=1)
    assert len(r.layers) == tiny.cfg.n_layers  # type: ignore[attr-defined]
    assert r.n_train + r.n_val + r.n_test == 24
    assert r.best_layer == int(torch.nan_to_num(r.val_acc, nan=-1).argmax())
    assert 0 <= r.cognition <= 1
    rows = 24 if probe == "letter" else sum(len(it.choices) for it in ds)
    assert r.projection.shape == (rows, 2)
    assert len(r.to_frame()) == tiny.cfg.n_layers  # type: ignore[attr-defined]
    r.save(tmp_path / "p.pt")  # type: ignore[operator]
    back = CognitionProbe.load(tmp_path / "p.pt")  # type: ignore[operator]
    assert back.cognition == r.cognition
    t = probe_cognition(tiny, ds, probe=probe, pca_dim=8, select="test", progress=False, seed=1)
    assert t.cognition == pytest.approx(float(t.test_acc.max()))
    assert "optimistic" in t.summary()


def test_probe_reads_a_planted_answer(tiny: object) -> None:
    """The right option ends in one word, the wrong ones in another: the probe must read it."""
    from dataclasses import replace

    base = _short("arc_easy", 40)
    items = tuple(
        replace(
            it,
            choices=tuple(
                c + (" Paris" if o == it.answer else " Rome") for o, c in enumerate(it.choices)
            ),
        )
        for it in base
    )
    ds = type(base)("planted", items)
    r = probe_cognition(tiny, ds, probe="option", pca_dim=8, progress=False)
    assert r.cognition > 0.9
    assert float(r.shuffled_acc.mean()) < 0.6
    plain = probe_cognition(tiny, base, probe="option", pca_dim=8, progress=False)
    assert plain.cognition < r.cognition


def test_bad_inputs(tiny: object) -> None:
    ds = _short("arc_easy", 5)
    with pytest.raises(EmptyInputError, match="1 item"):
        probe_cognition(tiny, ds.subset([0]), progress=False)
    with pytest.raises((ArgumentError, TypeCheckError)):
        probe_cognition(tiny, ds, probe="mlp", progress=False)  # type: ignore[arg-type]
    with pytest.raises(OutOfRangeError, match="pca_dim"):
        probe_cognition(tiny, ds, pca_dim=0, progress=False)
