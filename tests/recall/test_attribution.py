"""Attribution patching: the estimate equals its finite-difference definition, from the kept
graph or a forward of its own, in reduced precision close to float32."""

from __future__ import annotations

import pytest
import torch

import mechlin
from mechlin.recall.attribution import AttributionTrace, attribution_patch
from mechlin.recall.tracing import CausalTrace
from tests.reference.attribution_ref import (
    finite_difference,
    reference_estimate,
    reference_logprob_estimate,
)

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
CORRUPTED = "The Space Needle is located in the city of"


def _noise(trace, model, n=3, std=2.0):
    s0, s1 = trace.subject_span
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, s1 - s0, model.cfg.d_model, generator=gen) * std


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
@pytest.mark.parametrize("kind", ["resid", "mlp", "attn"])
@pytest.mark.parametrize("mode", ["noise", "prompt"])
@pytest.mark.parametrize("metric", ["prob", "logprob", "logit_diff"])
def test_estimate_equals_finite_differences(fixture, kind, mode, metric, request) -> None:
    model = request.getfixturevalue(fixture)
    est = attribution_patch(
        model,
        PROMPT,
        SUBJECT,
        kind=kind,
        window=2,
        n_samples=3,
        noise=2.0,
        corrupted_prompt=CORRUPTED if mode == "prompt" else None,
        metric=metric,
    )
    assert isinstance(est, AttributionTrace) and isinstance(est, CausalTrace)
    noise = _noise(est, model) if mode == "noise" else None
    ref = reference_estimate(
        model,
        PROMPT,
        SUBJECT,
        kind=kind,
        window=2,
        answer_id=est.answer_id,
        noise=noise,
        metric=metric,
        corrupted_prompt=CORRUPTED if mode == "prompt" else None,
        contrast_id=est.contrast_id,
    )
    got = (est.scores - est.corrupt_score).double()
    scale = float(ref.abs().max())
    assert scale > 1e-5  # the comparison is not between two zero grids
    assert float((got - ref).abs().max()) <= 1e-4 * scale


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
@pytest.mark.parametrize("kind", ["resid", "mlp"])
def test_logprob_linearisation_equals_its_reference(fixture, kind, request) -> None:
    model = request.getfixturevalue(fixture)
    kw = dict(kind=kind, window=2, n_samples=3, noise=2.0)
    est = attribution_patch(model, PROMPT, SUBJECT, linearize="logprob", **kw)
    plain = attribution_patch(model, PROMPT, SUBJECT, **kw)
    ref = reference_logprob_estimate(
        model, PROMPT, SUBJECT, kind=kind, window=2, answer_id=est.answer_id,
        noise=_noise(est, model),
    )  # fmt: skip
    got = (est.scores - est.corrupt_score).double()
    scale = float(ref.abs().max())
    assert scale > 1e-5
    assert float((got - ref).abs().max()) <= 1e-4 * scale
    assert not torch.allclose(est.scores, plain.scores)  # a different estimate, not a copy


def test_logprob_linearisation_of_the_logprob_is_the_plain_estimate(tiny) -> None:
    kw = dict(n_samples=3, noise=2.0, metric="logprob")
    a = attribution_patch(tiny, PROMPT, SUBJECT, linearize="logprob", **kw)
    b = attribution_patch(tiny, PROMPT, SUBJECT, **kw)
    # Bit for bit: for the logprob metric both differentiate the same metric and average the
    # rows alike (one code path), so a difference would be a wrong branch, not rounding.
    assert torch.equal(a.scores, b.scores)


def _prepare(model, *, method="auto", keep_graph=False, **kw):
    from mechlin.recall.tracing import prepare_trace

    args = dict(
        answer=None, kind="resid", window=2, noise=2.0, n_samples=3, seed=0,
        corrupted_prompt=None, metric="prob", positions=None, layers=None, contrast=None,
    )  # fmt: skip
    return prepare_trace(
        model, PROMPT, SUBJECT, method=method, keep_graph=keep_graph, **{**args, **kw}
    )


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
@pytest.mark.parametrize("method", ["replay", "packed"])
@pytest.mark.parametrize("kind", ["resid", "mlp", "attn"])
def test_estimate_from_the_kept_graph_is_the_separate_forward(fixture, method, kind, request):
    # prepare_trace(keep_graph=True) records the corrupted run, and the estimate differentiates
    # it instead of running its own forward: the same baseline bit for bit (the same kernels on
    # the same shapes: recording autograd does not change a forward's arithmetic), and the same
    # estimate to float32 rounding (the backward's sums may run in another order; on the
    # bundled models they agree bit for bit).
    from mechlin.recall.attribution import layer_estimates

    model = request.getfixturevalue(fixture)
    kept = _prepare(model, method=method, keep_graph=True, kind=kind)
    plain = _prepare(model, method=method, kind=kind)
    assert kept.graph is not None and plain.graph is None
    assert torch.equal(kept.corrupt_rows, plain.corrupt_rows)
    if method == "replay":  # the states that every restoration replays from
        saved = kept.engine.keys + kept.engine.values + kept.engine.resid_post
        assert not any(t.requires_grad for t in saved)
        want = plain.engine.keys + plain.engine.values + plain.engine.resid_post
        assert all(torch.equal(a, b) for a, b in zip(saved, want, strict=True))
    got, got_moved = layer_estimates(kept, "logprob")
    assert kept.graph is None  # a backward frees the graph: it serves one estimate
    want, want_moved = layer_estimates(plain, "logprob")
    scale = float(want.abs().max())
    assert scale > 1e-5 and torch.equal(got_moved, want_moved)
    assert torch.allclose(got, want, rtol=0, atol=1e-5 * scale)
    again, _ = layer_estimates(kept, "metric")  # after the graph: a forward of its own
    assert torch.equal(again, layer_estimates(plain, "metric")[0])


def test_estimate_falls_back_when_the_graph_lacks_a_gradient(tiny) -> None:
    # A hooked tensor that the forward does not consume has no gradient in the recorded graph
    # (TransformerLens converts some hook points); the estimate then runs its own forward.
    from mechlin.recall.attribution import layer_estimates

    kept = _prepare(tiny, keep_graph=True, kind="attn")
    name = next(iter(kept.graph.activations))
    kept.graph.activations[name] = kept.graph.activations[name].detach().requires_grad_()
    want, _ = layer_estimates(_prepare(tiny, kind="attn"), "metric")
    got, _ = layer_estimates(kept, "metric")
    assert float(want[:, 0].abs().max()) > 0 and torch.equal(got, want)


def test_the_reference_derivative_is_the_finite_difference() -> None:
    # The reference above, checked against central differences in float64 (the tiny Llama's
    # RMSNorm computes in float32, so h cannot be small: the agreement is to ~1e-4).
    model = mechlin.tiny_model(seed=0, dtype=torch.float64)
    est = attribution_patch(model, PROMPT, SUBJECT, n_samples=3, noise=2.0, metric="logprob")
    noise = _noise(est, model)
    ref = reference_estimate(
        model,
        PROMPT,
        SUBJECT,
        kind="resid",
        window=1,
        answer_id=est.answer_id,
        noise=noise,
        metric="logprob",
    )
    s0, scale = est.subject_span[0], float(ref.abs().max())
    for layer, pos in ((0, s0), (1, s0 + 1), (2, len(est.tokens) - 1)):
        fd = finite_difference(
            model,
            PROMPT,
            SUBJECT,
            kind="resid",
            layer=layer,
            position=pos,
            answer_id=est.answer_id,
            noise=noise,
            metric="logprob",
            h=1e-2,
        )
        assert fd == pytest.approx(float(ref[layer, pos]), abs=2e-3 * scale)


def test_reduced_precision_stays_close_to_float32() -> None:
    # GPU readiness: the estimate in bfloat16 / float16 against float32 on the same weights.
    ref = attribution_patch(
        mechlin.tiny_model(seed=0), PROMPT, SUBJECT, metric="logprob", n_samples=3, noise=2.0
    )
    scale = float((ref.scores - ref.corrupt_score).abs().max())
    for dtype, tol in ((torch.bfloat16, 0.08), (torch.float16, 0.01)):
        low = attribution_patch(
            mechlin.tiny_model(seed=0, dtype=dtype),
            PROMPT,
            SUBJECT,
            metric="logprob",
            n_samples=3,
            noise=2.0,
        )
        diff = float((low.scores - ref.scores).abs().max())
        assert diff <= tol * scale, (dtype, diff, scale)
