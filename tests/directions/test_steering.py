"""Steering: scoped hooks, sweeps, and the arithmetic of steering at the unembedding."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import mechlin
from mechlin.directions.concepts import concept_directions
from mechlin.directions.steering import SteeringSweep, steer, steering_sweep
from tests.reference.concepts_ref import reference_steered_logits

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
