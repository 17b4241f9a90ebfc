"""Shared fixtures: tiny in-process models, the bundled pretrained models, and a hook-leak guard."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import mechlin

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_MODELS: list[object] = []  # every model a fixture handed out, for the hook-leak guard


def _track(model: object) -> object:
    _MODELS.append(model)
    return model


@pytest.fixture(scope="session")
def tiny() -> object:
    """A 3-layer Llama-style model (GQA 4/2 heads) with a BOS-adding tokenizer."""
    return _track(mechlin.tiny_model(seed=0))


@pytest.fixture(scope="session")
def tiny_gemma() -> object:
    """A 3-layer Gemma-3-style model (sliding-window layers, QK norms)."""
    return _track(mechlin.tiny_model(arch="gemma3", seed=1))


@pytest.fixture(scope="session")
def tiny_no_bos() -> object:
    """A tiny model whose tokenizer adds no BOS (like SmolLM2's)."""
    return _track(mechlin.tiny_model(seed=2, add_bos=False))


@pytest.fixture(scope="session")
def smollm2() -> object:
    return _track(mechlin.load_model("smollm2-135m", device="cpu"))


@pytest.fixture(scope="session")
def gemma() -> object:
    return _track(mechlin.load_model("gemma-3-270m", device="cpu"))


def _live_hooks(model: object) -> list[str]:
    live = []
    for name, hp in model.hook_dict.items():  # type: ignore[attr-defined]
        if hp.fwd_hooks or hp.bwd_hooks or hp._forward_hooks or hp._backward_hooks:
            live.append(name)
    return live


@pytest.fixture(autouse=True)
def no_hook_left_behind() -> Iterator[None]:
    """Fail any test after which a model still carries a hook (hooks must be scoped)."""
    yield
    for model in _MODELS:
        live = _live_hooks(model)
        assert not live, f"hooks left on the model after the test: {live[:5]}"


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty MECHLIN_CACHE for tests of the cache itself."""
    monkeypatch.setenv("MECHLIN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def pytest_report_header() -> str:
    return f"mechlin cache: {os.environ.get('MECHLIN_CACHE', '~/.cache/mechlin')}"
