"""The architecture matrix: every analysis on every family users bring, against plain HF.

Each family of ``tests/architectures.py`` is built as a tiny random Hugging Face model, saved to
a folder with the tiny tokenizer, and loaded as a user would: ``mechlin.load_model(folder)``.
A second, plain Hugging Face instance is loaded from the same folder for the references
(``tests/reference/architecture_ref.py``). For each analysis, either mechlin's result agrees
with the reference, or ``mechlin.check_support`` says the model does not support it and the
analysis raises ``NotSupportedError``: never a traceback from deep inside, never a silent no-op.

``docs/support.md`` is generated from these models' ``check_support`` reports: the last test
fails when it is stale (rewrite it with ``MECHLIN_WRITE_SUPPORT=1 pytest
tests/test_architectures.py -k support_table``).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

import mechlin
from mechlin import sites, support
from mechlin.cognition.expression import score_options
from mechlin.recall.extraction import head_outputs
from mechlin.recall.tracing import window_layers
from mechlin.tiny import tiny_tokenizer
from tests.architectures import ARCHITECTURES, build_hf
from tests.reference import architecture_ref as ref
from tests.reference.cognition_ref import hf_loglik

FAMILIES = list(ARCHITECTURES)
PROMPT = "The Eiffel Tower is located in the city of"
CORRUPTED = "The Space Needle is located in the city of"  # the same number of tokens
SUBJECT = "Eiffel Tower"
SUPPORT_DOC = Path(__file__).resolve().parents[1] / "docs" / "support.md"


@cache
def _folder(family: str) -> Path:
    import tempfile

    tok = tiny_tokenizer()
    folder = Path(tempfile.mkdtemp(prefix=f"mechlin-arch-{family}-"))
    build_hf(family, len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@cache
def _models(family: str) -> tuple[Any, Any]:
    """(the bridge, as ``load_model`` gives it; the plain Hugging Face model), same folder."""
    from transformers import AutoModelForCausalLM

    folder = _folder(family)
    bridge = mechlin.load_model(str(folder), device="cpu")
    plain = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return bridge, plain


def _supported(model: Any, analysis: str) -> bool:
    return dict(support.check_support(model).analyses)[analysis] is None


def _close(
    got: torch.Tensor, want: torch.Tensor, what: str, rel: float = 1e-5, atol: float = 1e-7
) -> None:
    """float32 agreement: a few ulps per operation of a 3-layer forward, relative to the scale
    of the compared tensors (``atol`` for quantities read out of larger ones: a log-probability
    change of ~1e-3 inherits the rounding of log-probabilities of ~6)."""
    got, want = got.detach().double(), want.detach().double()
    scale = float(want.abs().max()) + 1e-6
    err = float((got - want).abs().max())
    assert err <= rel * scale + atol, f"{what}: max error {err:.3g} at scale {scale:.3g}"


def _path(family: str, layer: int, part: str) -> str:
    arch = ARCHITECTURES[family]
    return f"{arch.layers}.{layer}" + ("" if part == "layer" else f".{getattr(arch, part)}")


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_hook_sites_equal_hugging_face(family: str) -> None:
    model, hf = _models(family)
    ids = model.to_tokens(PROMPT)
    with torch.no_grad():
        want = hf(ids, output_hidden_states=True)
        _, cache_ = model.run_with_cache(ids)
    _close(model(ids), want.logits, "logits")
    n = int(model.cfg.n_layers)
    paths = {part: [_path(family, j, part) for j in range(n)] for part in ("attn", "mlp", "o_proj")}
    outs = ref.outputs(hf, ids, [p for ps in paths.values() for p in ps])
    neurons = ref.inputs(hf, ids, [_path(family, j, "down") for j in range(n)])
    for j in range(n):
        _close(
            cache_[sites.hook_name(model, "resid_pre", j)], want.hidden_states[j], f"resid_pre {j}"
        )
        _close(
            cache_[sites.hook_name(model, "attn_out", j)], outs[paths["attn"][j]], f"attn_out {j}"
        )
        _close(cache_[sites.hook_name(model, "mlp_out", j)], outs[paths["mlp"][j]], f"mlp_out {j}")
        if _supported(model, "extraction"):  # the one analysis that reads attn_proj_out
            proj = cache_[sites.hook_name(model, "attn_proj_out", j)]
            _close(proj, outs[paths["o_proj"][j]], f"attn_proj_out {j}")
        post = cache_[sites.hook_name(model, "mlp_post", j)]
        _close(post, neurons[_path(family, j, "down")], f"mlp_post {j}")
    assert model.cfg.d_mlp == neurons[_path(family, 0, "down")].shape[-1]  # OPT: was 2x


@pytest.mark.parametrize("kind", ["resid", "mlp", "attn"])
@pytest.mark.parametrize("family", FAMILIES)
def test_causal_trace_cells_equal_hugging_face(family: str, kind: str) -> None:
    model, hf = _models(family)
    if not _supported(model, f"trace_{kind}"):
        with pytest.raises(mechlin.NotSupportedError):
            mechlin.causal_trace(model, PROMPT, SUBJECT, corrupted_prompt=CORRUPTED, kind=kind)
        return
    trace = mechlin.causal_trace(
        model, PROMPT, SUBJECT, corrupted_prompt=CORRUPTED, kind=kind, window=2
    )
    clean, corrupt = model.to_tokens(PROMPT), model.to_tokens(CORRUPTED)
    n = int(model.cfg.n_layers)
    part = {"resid": "layer", "mlp": "mlp", "attn": "attn"}[kind]
    clean_outs = ref.outputs(hf, clean, [_path(family, j, part) for j in range(n)])
    want = torch.empty_like(trace.scores, dtype=torch.float64)
    for row, layer in enumerate(trace.layers):
        restored = [layer] if kind == "resid" else list(window_layers(layer, 2, n))
        patch = {_path(family, j, part): clean_outs[_path(family, j, part)] for j in restored}
        for col, t in enumerate(trace.positions):
            want[row, col] = ref.restored_prob(hf, corrupt, patch, t, trace.answer_id)
    _close(trace.scores, want, f"{kind} trace", rel=1e-4)
    if kind == "resid":  # restoring a whole layer's state moves the answer (windows may not)
        assert float((want - trace.corrupt_score).abs().max()) > 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_attribution_and_adaptive_trace_run_and_agree(family: str) -> None:
    model, _ = _models(family)
    kwargs: dict[str, Any] = dict(corrupted_prompt=CORRUPTED, kind="mlp", window=2)
    if not _supported(model, "trace_mlp"):
        with pytest.raises(mechlin.NotSupportedError):
            mechlin.attribution_patch(model, PROMPT, SUBJECT, **kwargs)
        return
    estimate = mechlin.attribution_patch(model, PROMPT, SUBJECT, **kwargs)
    exact = mechlin.causal_trace(model, PROMPT, SUBJECT, **kwargs)
    assert estimate.scores.shape == exact.scores.shape and torch.isfinite(estimate.scores).all()
    full = mechlin.adaptive_trace(model, PROMPT, SUBJECT, budget=1.0, **kwargs)
    # The cells it restored exactly equal the exact trace's (probabilities from float32 logits
    # through two engines' batches: 1e-5 absolute); the MLP screen's stride infers the others.
    assert bool(full.exact.any())
    _close(
        full.scores[full.exact], exact.scores[full.exact], "adaptive trace's exact cells", atol=1e-5
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_knockout_equals_hugging_face_mask_edit(family: str) -> None:
    model, hf = _models(family)
    if not _supported(model, "knockout"):
        with pytest.raises(mechlin.NotSupportedError):
            mechlin.attention_knockout(model, PROMPT, SUBJECT, window=1)
        return
    curve = mechlin.attention_knockout(model, PROMPT, SUBJECT, window=1)
    ids = model.to_tokens(PROMPT)
    with torch.no_grad():
        base = float(hf(ids).logits[0, -1].double().log_softmax(-1)[curve.answer_id])
    want = torch.tensor(
        [
            ref.knockout_logprob(
                hf, ids, [ref.attention_module(hf, _path(family, layer, "layer"))],
                curve.sources, curve.answer_id,
            ) - base
            for layer in curve.layers
        ]
    )  # fmt: skip
    _close(curve.logprob_change, want, "knockout log p change", rel=1e-4, atol=1e-5)
    assert float(want.abs().max()) > 1e-5  # the reference's knockout moves the answer


@pytest.mark.parametrize("family", FAMILIES)
def test_steering_equals_hugging_face(family: str) -> None:
    model, hf = _models(family)
    vector = torch.randn(int(model.cfg.d_model), generator=torch.Generator().manual_seed(0))
    if not _supported(model, "steering"):
        with pytest.raises(mechlin.NotSupportedError):
            with mechlin.steer(model, vector, layer=1, alpha=2.0):
                pass
        return
    ids = model.to_tokens(PROMPT)
    with torch.no_grad(), mechlin.steer(model, vector, layer=1, alpha=2.0) as steered:
        got = steered(ids)[0]
    want = ref.steered_logits(hf, ids, _path(family, 1, "layer"), vector, 2.0)
    _close(got, want, "steered logits")


@pytest.mark.parametrize("family", FAMILIES)
def test_activations_and_head_outputs_equal_hugging_face(family: str) -> None:
    model, hf = _models(family)
    texts = [PROMPT, "Big Ben is in London", CORRUPTED]
    name = sites.hook_name(model, "mlp_post", 1)
    acts = mechlin.collect_activations(model, texts, hooks=name, pooling="last", progress=False)
    want = torch.cat(
        [
            ref.inputs(hf, model.to_tokens(t), [_path(family, 1, "down")])[
                _path(family, 1, "down")
            ][:, -1]
            for t in texts
        ]
    )
    _close(acts[name], want, "mlp_post activations (last token)")
    ids = model.to_tokens(PROMPT)
    with torch.no_grad():
        _, cache_ = model.run_with_cache(ids)
    if not _supported(model, "extraction"):
        with pytest.raises(mechlin.NotSupportedError):
            head_outputs(model, cache_, 0)
        return
    # The heads' contributions and the output bias sum to the sublayer's output (attn_out,
    # checked against Hugging Face above), after any post-attention norm's gain.
    o_proj = _path(family, 0, "o_proj")
    bias = getattr(hf.get_submodule(o_proj), "bias", None)
    proj = ref.outputs(hf, ids, [o_proj])[o_proj][:, -1]
    heads = head_outputs(model, cache_, 0)
    out = cache_[sites.hook_name(model, "attn_out", 0)][:, -1]
    gain = torch.where(proj != 0, out / proj, torch.ones_like(out))
    whole = heads.sum(1) + (0 if bias is None else bias * gain)
    _close(whole, out, "per-head outputs sum to attn_out", rel=1e-4)
    rates = mechlin.extraction_rates(model, [(PROMPT, SUBJECT)], progress=False)
    # (prompt, subject) pairs score the model's own prediction: the one fact is always used
    assert len(rates.mhsa_rate) == model.cfg.n_layers and torch.isfinite(rates.mhsa_rate).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_option_scores_equal_hugging_face(family: str) -> None:
    model, hf = _models(family)
    prompt, options = "Question: Where is the Eiffel Tower?\nAnswer:", [" Paris", " in Rome"]
    got = score_options(model, prompt, options, batch_size=2)
    tok = tiny_tokenizer()
    want = torch.tensor([hf_loglik(hf, tok, prompt, o) for o in options], dtype=torch.float64)
    _close(got, want, "option log-likelihoods", rel=1e-4)


def support_table() -> str:
    """The markdown table of ``docs/support.md``, from every family's ``check_support``."""
    from mechlin.recall._replay import replay_supported

    keys = list(support.ANALYSES)
    lines = [
        "| family | architecture | " + " | ".join(keys) + " | knockout via | tracing engine |",
        "|" + "---|" * (len(keys) + 4),
    ]
    for family in FAMILIES:
        model, _ = _models(family)
        report = support.check_support(model)
        cells = ["yes" if why is None else "**no**" for _, why in report.analyses]
        engine = "replay" if replay_supported(model) else "packed"
        lines.append(
            f"| {family} | {report.architecture} | " + " | ".join(cells)
            + f" | {report.knockout or '-'} | {engine} |"
        )  # fmt: skip
    legend = "\n".join(f"- `{k}`: {label}" for k, (label, _) in support.ANALYSES.items())
    return "\n".join(lines) + "\n\nColumns:\n" + legend + "\n"


_BEGIN, _END = "<!-- support table: begin -->", "<!-- support table: end -->"


def test_support_table_is_current() -> None:
    text = SUPPORT_DOC.read_text()
    start, end = text.index(_BEGIN) + len(_BEGIN), text.index(_END)
    table = "\n" + support_table()
    if os.environ.get("MECHLIN_WRITE_SUPPORT"):
        SUPPORT_DOC.write_text(text[:start] + table + text[end:])
        return
    assert text[start:end] == table, (
        "docs/support.md is stale: MECHLIN_WRITE_SUPPORT=1 pytest tests/test_architectures.py "
        "-k support_table"
    )
