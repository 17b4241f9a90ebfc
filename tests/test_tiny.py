"""The tiny model factory: seeded, offline, and numerically the Hugging Face model it wraps."""

from __future__ import annotations

import pytest
import torch

import mechlin
from mechlin.tiny import tiny_hf_model

PROMPT = "The capital of Italy is Rome."


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_tiny_bridge_equals_hf(arch: str) -> None:
    model = mechlin.tiny_model(arch=arch, seed=5)
    hf = tiny_hf_model(arch=arch, seed=5, vocab_size=len(model.tokenizer))
    ids = model.to_tokens(PROMPT)
    with torch.no_grad():
        assert torch.allclose(model(ids), hf(ids).logits, atol=1e-6)


def test_same_seed_same_model_other_seed_other_model() -> None:
    a, b, c = (mechlin.tiny_model(seed=s) for s in (7, 7, 8))
    with torch.no_grad():
        la, lb, lc = (m(PROMPT) for m in (a, b, c))
    assert torch.equal(la, lb)
    assert not torch.allclose(la, lc)


def test_tiny_model_has_gqa_and_eval_mode(tiny: object) -> None:
    cfg = tiny.cfg  # type: ignore[attr-defined]
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads) == (3, 4, 2)
    assert not tiny.training  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float64", torch.float64)],
)
def test_dtype_by_name_is_the_torch_dtype(name: str, dtype: torch.dtype) -> None:
    by_name = mechlin.tiny_model(seed=4, dtype=name)  # type: ignore[arg-type]
    by_dtype = mechlin.tiny_model(seed=4, dtype=dtype)
    assert {p.dtype for p in by_name.parameters()} == {dtype}
    assert by_name.mechlin_source["kwargs"]["dtype"] is dtype  # what a runner reloads
    with torch.no_grad():
        assert torch.equal(by_name(PROMPT), by_dtype(PROMPT))


@pytest.mark.parametrize("dtype", ["float8", "fp16", "torch.float16", 16, float, None])
def test_unknown_dtype_is_an_argument_error(dtype: object) -> None:
    with pytest.raises(mechlin.ArgumentError, match=r"tiny_model\(\): dtype=.*'bfloat16'"):
        mechlin.tiny_model(dtype=dtype)  # type: ignore[arg-type]
