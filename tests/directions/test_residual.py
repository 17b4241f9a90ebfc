"""Residual-stream concept directions: estimators, held-out scoring, collection."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import mechlin
from mechlin.directions.residual import (
    _logistic,
    collect_residuals,
    residual_direction,
)
from tests.directions.texts import LABELS, TEXTS

PROMPT = "The capital of France is"


def test_mean_diff_direction_equals_explicit_computation(tiny) -> None:
    result = residual_direction(tiny, TEXTS, LABELS, layer=1, test_fraction=0.25, seed=3)
    name = mechlin.hook_name(tiny, "resid_post", 1)
    acts = []
    for text in TEXTS:
        with torch.no_grad():
            _, cache = tiny.run_with_cache(tiny.to_tokens(text), names_filter=[name])
        acts.append(cache[name][0, -1])
    x = torch.stack(acts).double()
    train = ~result.is_test
    assert result.is_test.sum() == 2 and result.is_test[:4].sum() == 1  # one per label
    y = torch.tensor(LABELS)
    diff = x[train & (y == 1)].mean(0) - x[train & (y == 0)].mean(0)
    assert torch.allclose(result.direction.double(), diff / diff.norm(), atol=1e-5)
    scores = x @ (diff / diff.norm())
    assert torch.allclose(result.scores.double(), scores, atol=1e-4)
    m0, m1 = scores[train & (y == 0)].mean(), scores[train & (y == 1)].mean()
    assert result.threshold == pytest.approx(float(m0 + m1) / 2, abs=1e-4)
    assert result.test_pair_accuracy != result.test_pair_accuracy  # NaN: not paired
    correct = [(float(scores[i]) > result.threshold) == bool(LABELS[i]) for i in range(8)]
    test_idx = result.is_test.nonzero().flatten().tolist()
    assert result.test_accuracy == pytest.approx(sum(correct[i] for i in test_idx) / 2)


def test_batched_collection_equals_one_text_at_a_time(tiny_gemma) -> None:
    batched = collect_residuals(tiny_gemma, TEXTS, layer=2, site="mlp_out", position=1)
    name = mechlin.hook_name(tiny_gemma, "mlp_out", 2)
    for i, text in enumerate(TEXTS):
        with torch.no_grad():
            _, cache = tiny_gemma.run_with_cache(tiny_gemma.to_tokens(text), names_filter=[name])
        assert torch.allclose(batched[i], cache[name][0, 1], atol=1e-5)


def test_logistic_probe_equals_scikit_learn() -> None:
    from sklearn.linear_model import LogisticRegression  # dev dependency: a reference only

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(80, 5, generator=gen).double() * torch.tensor([1.0, 5, 0.2, 1, 1]).double()
    y = (x[:, 0] + 0.2 * x[:, 1] + 0.5 * torch.randn(80, generator=gen) > 0).long()
    w = _logistic(x, y, l2=0.1)
    # mean BCE + l2/2 |w|^2 on standardized x  ==  sklearn's |w|^2/2 + C sum BCE, C = 1/(n l2)
    z = ((x - x.mean(0)) / x.std(0)).numpy()
    ref = LogisticRegression(C=1 / (80 * 0.1), tol=1e-12, max_iter=10_000).fit(z, y.numpy())
    expected = torch.tensor(ref.coef_[0]) / x.std(0)
    assert torch.allclose(w, expected, rtol=1e-5, atol=1e-7)
    assert w[0] > 0 and w[1] > 0  # the planted signs


def test_pca_direction_is_top_eigenvector_of_paired_differences(tiny) -> None:
    pairs = [(TEXTS[i], TEXTS[i + 4]) for i in range(4)] + [("The capital of", "The city of")]
    result = residual_direction(tiny, pairs, layer=0, method="pca", test_fraction=0.4, seed=1)
    test_pairs = result.is_test[0::2]
    assert torch.equal(result.is_test[0::2], result.is_test[1::2])  # whole pairs held out
    assert int(test_pairs.sum()) == 2
    acts = collect_residuals(tiny, result.texts, layer=0).double()
    d = (acts[1::2] - acts[0::2])[~test_pairs]
    _, evecs = torch.linalg.eigh(d.T @ d)
    top = evecs[:, -1] * torch.sign(evecs[:, -1] @ d.mean(0))
    assert torch.allclose(result.direction.double(), top, atol=1e-4)
    scores = acts @ result.direction.double()
    held = [i for i in range(5) if test_pairs[i]]
    wins = [bool(scores[2 * i + 1] > scores[2 * i]) for i in held]
    assert result.test_pair_accuracy == pytest.approx(sum(wins) / len(wins))
    logistic = residual_direction(tiny, pairs, layer=0, method="logistic", test_fraction=0.4)
    assert logistic.train_accuracy == 1.0  # 6 points in 64 dimensions: separable


def test_residual_direction_bad_input(tiny) -> None:
    with pytest.raises(IndexError, match="layer 5 is out of range"):
        residual_direction(tiny, TEXTS, LABELS, layer=5)
    with pytest.raises(ValueError, match="method='pca' takes"):
        residual_direction(tiny, TEXTS, LABELS, layer=0, method="pca")
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        residual_direction(tiny, TEXTS, [2] * 8, layer=0)
    with pytest.raises(mechlin.EmptyInputError, match="at least 2"):
        residual_direction(tiny, TEXTS[:3], [0, 0, 1], layer=0)
    with pytest.raises(ValueError, match="must be \\(text0, text1\\) pairs"):
        residual_direction(tiny, TEXTS, layer=0)


@pytest.mark.bundled
def test_smollm2_gender_direction_in_the_residual_stream(smollm2) -> None:
    words = [("king", "queen"), ("man", "woman"), ("father", "mother"), ("boy", "girl"),
             ("brother", "sister"), ("son", "daughter"), ("husband", "wife"),
             ("uncle", "aunt"), ("prince", "princess"), ("actor", "actress"),
             ("grandfather", "grandmother"), ("nephew", "niece")]  # fmt: skip
    pairs = [(f"Yesterday I met the {a}", f"Yesterday I met the {b}") for a, b in words]
    result = residual_direction(smollm2, pairs, layer=15, test_fraction=0.34)
    assert result.test_accuracy >= 0.75


def test_collect_residuals_refuses_the_bos_position(tiny) -> None:
    with pytest.raises(IndexError, match="BOS"):
        collect_residuals(tiny, TEXTS, layer=0, position=0)
    last = collect_residuals(tiny, TEXTS, layer=0)
    minus_one = collect_residuals(tiny, TEXTS, layer=0, position=-1)
    assert torch.equal(last, minus_one)
