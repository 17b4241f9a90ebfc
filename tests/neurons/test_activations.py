"""collect_activations: batched, padded, pooled, stored and resumed rows == one text at a time."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

import mechlin.neurons.activations as act_mod
from mechlin.errors import EmptyInputError, MissingHookError
from mechlin.neurons.activations import NeuronActivations, StoreMismatchError, collect_activations

TEXTS = [
    "a cat sat on the mat",
    "the dog",
    "hello world and more words here to make it long",
    "x",
    "numbers 1 2 3 and letters",
]


def _reference(model: Any, text: str, hook: str, pooling: str) -> torch.Tensor:
    """One text alone, no padding: the obviously correct pooled row(s)."""
    _, cache = model.run_with_cache(text, names_filter=[hook])
    x = cache[hook][0]  # (pos, d_mlp)
    if model.cfg.default_prepend_bos:
        x = x[1:]  # BOS left out of every pooling
    return {"mean": x.mean(0), "max": x.max(0).values, "last": x[-1], "none": x}[pooling]


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma", "tiny_no_bos"])
@pytest.mark.parametrize("pooling", ["mean", "max", "last", "none"])
def test_batched_rows_equal_one_text_at_a_time(
    request: pytest.FixtureRequest, fixture: str, pooling: str
) -> None:
    model = request.getfixturevalue(fixture)
    acts = collect_activations(model, TEXTS, pooling=pooling, batch_size=3, progress=False)  # type: ignore[arg-type]
    for layer in range(model.cfg.n_layers):
        hook = f"blocks.{layer}.mlp.hook_post"
        for i, text in enumerate(TEXTS):
            ref = _reference(model, text, hook, pooling)
            got = acts[layer][acts.rows_of(i)] if pooling == "none" else acts[layer][i]
            torch.testing.assert_close(got, ref.float(), atol=2e-5, rtol=1e-5)


def test_row_index_for_tokens(tiny: Any) -> None:
    acts = collect_activations(tiny, TEXTS, pooling="none", progress=False)
    for i, text in enumerate(TEXTS):
        ids = tiny.to_tokens(text)[0]
        rows = acts.rows_of(i)
        assert acts.token_ids[rows].tolist() == ids[1:].tolist()
        assert acts.position[rows].tolist() == list(range(1, len(ids)))
        assert int(acts.n_tokens[i]) == len(ids) - 1


def test_one_hook_stops_early_and_matches(tiny: Any) -> None:
    full = collect_activations(tiny, TEXTS, progress=False)
    one = collect_activations(tiny, TEXTS, hooks=["blocks.0.mlp.hook_post"], progress=False)
    assert one.hooks == ("blocks.0.mlp.hook_post",)
    torch.testing.assert_close(one[0], full[0])
    other = collect_activations(tiny, TEXTS, hooks=["blocks.1.hook_resid_post"], progress=False)
    assert other[1].shape == (len(TEXTS), tiny.cfg.d_model)


def test_disk_store_equals_memory_and_reloads(tiny: Any, tmp_path: Path) -> None:
    mem = collect_activations(tiny, TEXTS, pooling="max", progress=False)
    disk = collect_activations(
        tiny, TEXTS, pooling="max", out=tmp_path / "s", chunk_size=2, progress=False
    )
    assert not (tmp_path / "s" / "chunks").exists()  # consolidated: one file per hook
    for layer in range(tiny.cfg.n_layers):
        torch.testing.assert_close(disk[layer], mem[layer])
    again = NeuronActivations.load(tmp_path / "s")
    torch.testing.assert_close(again[2], mem[2])
    saved = mem.save(tmp_path / "m")
    torch.testing.assert_close(NeuronActivations.load(saved)[1], mem[1])


def test_float16_storage(tiny: Any) -> None:
    half = collect_activations(tiny, TEXTS, dtype=torch.float16, progress=False)
    full = collect_activations(tiny, TEXTS, progress=False)
    assert half[0].dtype == torch.float16
    torch.testing.assert_close(half[0].float(), full[0], atol=2e-3, rtol=2e-3)


def test_interrupted_collection_resumes_without_recomputing(
    tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = act_mod._run_chunk

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run during the second chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(act_mod, "_run_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        collect_activations(tiny, TEXTS, out=tmp_path, chunk_size=2, progress=False)
    assert len(list((tmp_path / "chunks").glob("*.pt"))) == 1
    with pytest.raises(StoreMismatchError, match="unfinished"):
        NeuronActivations.load(tmp_path)
    calls.clear()
    monkeypatch.setattr(act_mod, "_run_chunk", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = collect_activations(tiny, TEXTS, out=tmp_path, chunk_size=2, progress=False)
    assert len(calls) == 2  # chunks 2 and 3 of 3; chunk 1 came from disk
    torch.testing.assert_close(resumed[1], collect_activations(tiny, TEXTS, progress=False)[1])


def test_store_of_other_texts_is_refused(tiny: Any, tmp_path: Path) -> None:
    collect_activations(tiny, TEXTS, out=tmp_path, progress=False)
    with pytest.raises(StoreMismatchError, match="new out="):
        collect_activations(tiny, TEXTS[:2], out=tmp_path, progress=False)


def test_truncation_is_reported(tiny: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        acts = collect_activations(tiny, TEXTS, max_tokens=4, pooling="none", progress=False)
    assert "truncated" in caplog.text
    assert int(acts.n_tokens.max()) == 3  # 4 tokens incl. BOS


def test_bad_inputs(tiny: Any) -> None:
    with pytest.raises(EmptyInputError, match="no texts"):
        collect_activations(tiny, [], progress=False)
    with pytest.raises(EmptyInputError, match="text 1 is empty"):
        collect_activations(tiny, ["fine", "  "], progress=False)
    with pytest.raises(MissingHookError, match="no hook point"):
        collect_activations(tiny, TEXTS, hooks=["blocks.0.mlp.hook_postt"], progress=False)
    acts = collect_activations(tiny, TEXTS, progress=False)
    with pytest.raises(KeyError, match="collected"):
        acts["blocks.9.mlp.hook_post"]
