"""Causal tracing: the fast engines equal the one-forward-per-cell reference; ROME's invariants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mechlin
from mechlin.recall.tracing import CausalTrace, causal_trace, embedding_std, window_layers
from tests.reference.causal_trace_ref import reference_trace

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
CORRUPTED = "The Space Needle is located in the city of"  # same token length on the tiny models


def _reference_for(model, trace: CausalTrace, *, noise_std: float | None, seed: int = 0):
    noise = None
    if trace.corrupted_prompt is None:
        s0, s1 = trace.subject_span
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(trace.n_samples, s1 - s0, model.cfg.d_model, generator=gen) * noise_std
    return reference_trace(
        model,
        PROMPT,
        SUBJECT,
        kind=trace.kind,
        window=trace.window,
        answer_id=trace.answer_id,
        noise=noise,
        corrupted_prompt=trace.corrupted_prompt,
        metric=trace.metric,
        contrast_id=trace.contrast_id,
        layers=trace.layers,
        positions=trace.positions,
    )


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
@pytest.mark.parametrize("kind", ["resid", "mlp", "attn"])
@pytest.mark.parametrize("mode", ["noise", "prompt"])
@pytest.mark.parametrize("method", ["replay", "packed"])
@pytest.mark.parametrize("metric", ["prob", "logprob", "logit_diff"])
def test_engines_equal_reference(fixture, kind, mode, method, metric, request) -> None:
    model = request.getfixturevalue(fixture)
    trace = causal_trace(
        model,
        PROMPT,
        SUBJECT,
        kind=kind,
        window=2,
        n_samples=4,
        noise=2.0,
        corrupted_prompt=CORRUPTED if mode == "prompt" else None,
        metric=metric,
        method=method,
    )
    scores, p_clean, p_corrupt = _reference_for(model, trace, noise_std=2.0)
    assert torch.allclose(trace.scores, scores, atol=1e-5, rtol=0)
    assert trace.clean_score == pytest.approx(p_clean, abs=1e-5)
    assert trace.corrupt_score == pytest.approx(p_corrupt, abs=1e-5)


def test_tiny_memory_budget_splits_batches_without_changing_scores(tiny) -> None:
    kw = dict(kind="mlp", window=2, n_samples=3, noise=1.0, metric="logprob")
    whole = causal_trace(tiny, PROMPT, SUBJECT, **kw)
    for method in ("replay", "packed"):
        split = causal_trace(tiny, PROMPT, SUBJECT, memory_budget=1, method=method, **kw)
        assert torch.allclose(whole.scores, split.scores, atol=1e-6)


def test_restoring_the_last_state_gives_the_clean_run(tiny) -> None:
    trace = causal_trace(tiny, PROMPT, SUBJECT, noise=3.0, metric="logprob")
    assert trace.scores[-1, -1].item() == pytest.approx(trace.clean_score, abs=1e-5)


def test_positions_before_the_subject_have_no_effect(tiny) -> None:
    # Noise is added at the subject only, so earlier states are the same in both runs.
    trace = causal_trace(tiny, PROMPT, SUBJECT, noise=3.0, metric="logprob")
    s0 = trace.subject_span[0]
    assert s0 >= 1
    assert torch.allclose(trace.indirect_effect[:, :s0], torch.zeros(1), atol=1e-5)


def test_window_clipping_at_both_ends() -> None:
    assert window_layers(0, 10, 30) == range(0, 5)
    assert window_layers(7, 10, 30) == range(2, 12)  # ROME code: [l-5, l+4]
    assert window_layers(29, 10, 30) == range(24, 30)
    assert window_layers(1, 10, 3) == range(0, 3)
    assert window_layers(4, 9, 30) == range(0, 9)  # odd window: [l-4, l+4]


def test_subject_at_position_zero_and_after_bos(tiny, tiny_no_bos) -> None:
    prompt = "Paris is the capital of"
    for model, start in [(tiny_no_bos, 0), (tiny, 1)]:
        trace = causal_trace(model, prompt, "Paris", noise=2.0, n_samples=2, metric="logprob")
        s0, s1 = trace.subject_span
        assert s0 == start
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(2, s1 - s0, model.cfg.d_model, generator=gen) * 2.0
        scores, _, _ = reference_trace(
            model,
            prompt,
            "Paris",
            kind="resid",
            window=10,
            answer_id=trace.answer_id,
            noise=noise,
            corrupted_prompt=None,
            metric="logprob",
        )
        assert torch.allclose(trace.scores, scores, atol=1e-5)


def test_same_seed_same_scores_other_seed_other_noise(tiny) -> None:
    a = causal_trace(tiny, PROMPT, SUBJECT, noise=2.0, seed=1, layers=[1], metric="logprob")
    b = causal_trace(tiny, PROMPT, SUBJECT, noise=2.0, seed=1, layers=[1], metric="logprob")
    c = causal_trace(tiny, PROMPT, SUBJECT, noise=2.0, seed=2, layers=[1], metric="logprob")
    assert torch.equal(a.scores, b.scores) and a.corrupt_score == b.corrupt_score
    assert a.corrupt_score != c.corrupt_score


def test_answer_choices(tiny) -> None:
    own = causal_trace(tiny, PROMPT, SUBJECT, noise=2.0, layers=[0])
    with torch.no_grad():
        top = int(tiny(PROMPT)[0, -1].argmax())
    assert own.answer_id == top and not own.answer_is_multi_token
    multi = causal_trace(tiny, PROMPT, SUBJECT, answer="Antarctica", noise=2.0, layers=[0])
    assert multi.answer_is_multi_token
    assert multi.answer_id == mechlin.answer_tokens(tiny, "Antarctica")[0]


def test_bad_inputs(tiny) -> None:
    with pytest.raises(ValueError, match="same token length"):
        causal_trace(tiny, PROMPT, SUBJECT, corrupted_prompt="The Louvre is in the city of")
    with pytest.raises(mechlin.SubjectNotFoundError):
        causal_trace(tiny, PROMPT, "Louvre")
    with pytest.raises(IndexError):
        causal_trace(tiny, PROMPT, SUBJECT, layers=[7])


def test_result_saves_plots_and_tabulates(tiny, tmp_path: Path) -> None:
    trace = causal_trace(tiny, PROMPT, SUBJECT, kind="attn", window=2, noise=2.0)
    again = CausalTrace.load(trace.save(tmp_path / "t.pt"))
    assert torch.equal(again.scores, trace.scores) and again.tokens == trace.tokens
    assert again.subject_span == trace.subject_span and again.kind == "attn"
    fig = trace.plot()
    assert fig.axes
    assert "<img" in trace._repr_html_()
    frame = trace.to_frame()
    assert len(frame) == trace.scores.numel() and frame["in_subject"].sum() == (
        (trace.subject_span[1] - trace.subject_span[0]) * tiny.cfg.n_layers
    )


def test_embedding_std_matches_rome_loop(tiny) -> None:
    subjects = ["Eiffel Tower", "Paris", "Beats Music"]
    pieces = []
    for s in subjects:  # ROME's collect_embedding_std: each subject run on its own
        ids = torch.tensor([tiny.tokenizer(s, add_special_tokens=False)["input_ids"]])
        _, cache = tiny.run_with_cache(ids, names_filter=["hook_embed"])
        pieces.append(cache["hook_embed"][0])
    expected = torch.cat(pieces).double().std().item()
    assert embedding_std(tiny, subjects) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(mechlin.EmptyInputError):
        embedding_std(tiny, [])


@pytest.mark.bundled
@pytest.mark.parametrize("kind", ["resid", "mlp", "attn"])
@pytest.mark.parametrize("mode", ["noise", "prompt"])
def test_smollm2_equals_reference(smollm2, kind, mode) -> None:
    corrupted = "The Space Needle is located in the city of"
    assert smollm2.to_tokens(corrupted).shape == smollm2.to_tokens(PROMPT).shape
    trace = causal_trace(
        smollm2,
        PROMPT,
        SUBJECT,
        kind=kind,
        corrupted_prompt=corrupted if mode == "prompt" else None,
        layers=[0, 4, 13, 22, 29],
        n_samples=3,  # the reference loop runs a forward pass per cell and sample
    )
    scores, p_clean, p_corrupt = _reference_for(smollm2, trace, noise_std=trace.noise_level)
    # Both sum the softmax's normalizer in float64 (a float32 softmax over 49k tokens is off by
    # ~1e-5 at p = 0.70, 1.4e-5 with the non-vectorized kernels), so what is left is the float32
    # logits of one forward per cell against the engines' batches: they move log p by a few
    # ulps of the logits' scale, so p by 8 eps * max|logit| relative (~2.7e-5; the default
    # kernels agree to 1e-9).
    with torch.no_grad():
        scale = float(smollm2(PROMPT)[0, -1].abs().max())
    rtol = 8 * torch.finfo(torch.float32).eps * scale
    torch.testing.assert_close(trace.scores, scores, rtol=rtol, atol=0)
    assert trace.corrupt_score == pytest.approx(p_corrupt, rel=rtol)
    assert trace.clean_score == pytest.approx(p_clean, rel=rtol)


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma", "smollm2"])
def test_engine_readout_is_sites_unembed(fixture, request) -> None:
    # The engines' readout skips ``sites.unembed``'s per-call checks; the logits are the same
    # bit for bit: the same final norm and matrix product on the same shapes (7 rows: one chunk
    # of TransformerLens's logit_readout).
    from mechlin.recall._engines import readout_logits

    model = request.getfixturevalue(fixture)
    resid = torch.randn(7, model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 5
    assert torch.equal(readout_logits(model, resid), mechlin.unembed(model, resid))


def test_engine_readout_adds_a_nonzero_unembedding_bias(tiny, monkeypatch) -> None:
    # The bundled and tiny models have a zero b_U, which the readout skips; a model with a bias
    # gets it added, as sites.unembed does.
    from mechlin.recall._engines import readout_logits

    bias = torch.randn(tiny.cfg.d_vocab, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(type(tiny), "b_U", property(lambda self: bias))
    resid = torch.randn(5, tiny.cfg.d_model, generator=torch.Generator().manual_seed(0))
    got = readout_logits(tiny, resid)
    assert torch.equal(got, mechlin.unembed(tiny, resid))
    monkeypatch.undo()
    assert torch.allclose(got - readout_logits(tiny, resid), bias.expand(5, -1), atol=1e-5)
