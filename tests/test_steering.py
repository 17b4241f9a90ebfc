"""Steering (scoped hooks, sweeps) and residual-space concept directions."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import mechlin
from mechlin.concepts import concept_directions
from mechlin.residual_directions import (
    ResidualDirection,
    _logistic,
    collect_residuals,
    interchange_along,
    residual_direction,
)
from mechlin.steering import SteeringSweep, steer, steering_sweep
from tests.reference.concepts_ref import reference_interchange, reference_steered_logits

PROMPT = "The capital of France is"


def _vector(model, seed=0):
    return torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layer", [1, "final"])
def test_alpha_zero_is_the_identity(tiny, layer) -> None:
    tokens = tiny.to_tokens(PROMPT)
    with torch.no_grad():
        clean = tiny(tokens)
        with steer(tiny, _vector(tiny), layer=layer, alpha=0.0):
            steered = tiny(tokens)
    assert torch.equal(clean, steered)


@pytest.mark.parametrize("positions", ["all", "last", [1, -2]])
@pytest.mark.parametrize("model_name", ["tiny", "tiny_gemma"])
def test_steer_equals_hand_written_hook(model_name, positions, request) -> None:
    model = request.getfixturevalue(model_name)
    tokens = model.to_tokens(PROMPT)
    vector = _vector(model, 1)
    name = mechlin.hook_name(model, "resid_post", 1)
    with torch.no_grad(), steer(model, vector, layer=1, alpha=0.7, positions=positions):
        steered = model(tokens)
    expected = reference_steered_logits(model, tokens, vector, name, 0.7, positions)
    assert torch.allclose(steered, expected, atol=1e-5)
    assert not torch.allclose(steered, model(tokens), atol=1e-3)  # it did steer


def test_final_steering_moves_logits_by_alpha_times_vector_at_w_u(tiny) -> None:
    tokens = tiny.to_tokens(PROMPT)
    vector = _vector(tiny, 2)
    with torch.no_grad():
        clean = tiny(tokens)[0, -1]
        with steer(tiny, vector, layer="final", alpha=0.3, positions="last"):
            steered = tiny(tokens)[0, -1]
    expected = 0.3 * vector @ tiny.W_U.detach()
    assert torch.allclose(steered - clean, expected, atol=1e-4)


def test_concept_steering_shifts_pair_logit_difference_by_alpha_times_projection(tiny) -> None:
    directions = concept_directions(tiny, {"c": [(3, 40), (7, 90), (11, 120)]})
    v = directions.steering_vector("c").float()
    sweep = steering_sweep(tiny, PROMPT, v, pairs={"pair": ("the", "The")}, alphas=[0.0, 0.5, 1.0])
    ids = sweep.token_ids
    g = directions.whiten(tiny.W_U.detach().T[ids].double())  # (2, d_model)
    projection = float((g[1] - g[0]) @ directions.unit[0])
    moved = sweep.log_ratios[:, 0] - sweep.log_ratios[0, 0]
    assert moved.tolist() == pytest.approx([0.0, 0.5 * projection, projection], abs=1e-3)


def test_sweep_equals_one_steer_per_alpha(tiny) -> None:
    vector = _vector(tiny, 3)
    alphas = [-1.0, 0.0, 2.0]
    sweep = steering_sweep(
        tiny,
        PROMPT,
        vector,
        pairs={"x": ("Paris", "Rome"), "y": ("the", "The")},
        alphas=alphas,
        layer=2,
        positions="all",
    )
    ids = [mechlin.answer_token(tiny, w) for w in ("Paris", "Rome", "the", "The")]
    assert sweep.token_ids.tolist() == ids
    for a, alpha in enumerate(alphas):
        with torch.no_grad(), steer(tiny, vector, layer=2, alpha=alpha):
            logits = tiny(tiny.to_tokens(PROMPT))[0, -1]
        assert torch.allclose(sweep.logits[a], logits[ids], atol=1e-4)
        lp = logits.double().log_softmax(-1)[ids].float()
        assert torch.allclose(sweep.logprobs[a], lp, atol=1e-4)
    ratio = sweep.log_ratios[:, 0]
    crossing = [alphas[a] for a in range(3) if ratio[a] > 0]
    assert sweep.crossover("x") == (crossing[0] if crossing else None)
    assert len(sweep.to_frame()) == 6


def test_steering_bad_input(tiny) -> None:
    with pytest.raises(IndexError, match=r"layer 3 is out of range: the model has layers 0\.\.2"):
        with steer(tiny, _vector(tiny), layer=3, alpha=1.0):
            pass
    with pytest.raises(ValueError, match=r"must have shape \(64,\)"):
        with steer(tiny, torch.zeros(65), layer=0, alpha=1.0):
            pass
    with pytest.raises(IndexError, match="out of range for"):
        with torch.no_grad(), steer(tiny, _vector(tiny), layer=0, alpha=1.0, positions=[50]):
            tiny(tiny.to_tokens(PROMPT))
    with pytest.raises(mechlin.MultiTokenAnswerError):
        steering_sweep(tiny, PROMPT, _vector(tiny), pairs={"x": ("the", "Eiffel")})
    with pytest.raises(mechlin.EmptyInputError):
        steering_sweep(tiny, PROMPT, _vector(tiny), pairs={})


def test_steering_hook_is_removed_on_error(tiny) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny, _vector(tiny), layer=0, alpha=1.0):
            raise RuntimeError("boom")
    # the autouse fixture checks that no hook is left


TEXTS = [
    "The capital of France is",
    "The capital of Italy is",
    "The city of Paris is",
    "The city of Rome is",
    "Big Ben is in London",
    "Miles Davis plays the trumpet",
    "Toko Yasuda plays the guitar",
    "Beats Music is owned by Apple",
]
LABELS = [0, 0, 0, 0, 1, 1, 1, 1]


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


def test_interchange_equals_reference(tiny, tmp_path) -> None:
    direction = residual_direction(tiny, TEXTS, LABELS, layer=1)
    pairs = [(TEXTS[0], TEXTS[4]), (TEXTS[5], TEXTS[1])]
    result = interchange_along(tiny, direction, pairs, ("Paris", "Rome"))
    ids = [mechlin.answer_token(tiny, w) for w in ("Paris", "Rome")]
    unit = direction.direction
    for p, (base, source) in enumerate(pairs):
        expected = reference_interchange(
            tiny, tiny.to_tokens(base), tiny.to_tokens(source), unit, direction.hook, ids
        )
        assert result.interchanged[p].item() == pytest.approx(expected, abs=1e-4)
        with torch.no_grad():
            logits = tiny(tiny.to_tokens(base))[0, -1]
        assert result.clean[p].item() == pytest.approx(float(logits[ids[1]] - logits[ids[0]]))
    assert not torch.allclose(result.placebo, result.clean)
    again = ResidualDirection.load(direction.save(tmp_path / "d.pt"))
    assert torch.equal(again.direction, direction.direction) and again.texts == direction.texts
    assert "<img" in direction._repr_html_() and "<img" in result._repr_html_()


@pytest.mark.bundled
def test_smollm2_king_to_queen(smollm2, tmp_path) -> None:
    directions = concept_directions(smollm2, ["male -> female", "lower -> upper"])
    pairs = {"male -> female": ("king", "queen"), "lower -> upper": ("king", "King")}
    sweep = steering_sweep(
        smollm2,
        "Long live the",
        directions.steering_vector("male -> female").float(),
        pairs=pairs,
        alphas=[0.0, 0.25, 0.5],
    )
    ratio = sweep.log_ratios
    assert ratio[0, 0] < 0 < ratio[-1, 0]  # queen overtakes king
    target, off = ratio[-1] - ratio[0]
    assert abs(off) < 0.25 * target  # the capitalization pair barely moves
    assert SteeringSweep.load(sweep.save(tmp_path / "s.pt")).pairs == sweep.pairs
    assert len(sweep.plot().axes) == 2


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
