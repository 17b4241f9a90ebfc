"""Lossless compression with a language model: next-token probabilities + a range coder.

The model predicts each token from the ones before; a range coder spends about ``-log2 p`` bits
on the token that came. Decoding runs the same model on the tokens decoded so far and asks the
coder which token those bits stand for. So the compressed size is the model's cross-entropy on
the data (plus a few bytes), and the better the model predicts, the smaller the file: Delétang
et al. 2023, "Language Modeling Is Compression" (arXiv 2309.10668); Bellard's ts_zip.

**Exactness.** The decoder must see the encoder's probabilities bit for bit: with a range coder,
one float32 ulp of difference corrupts the rest of the stream silently. A KV-cache step and a
full-sequence forward differ by up to 1e-4 in log-probability, so Delétang et al. re-run every
prefix (O(n^2) forwards). Here both directions run *one* function, ``_code_chunk``, with the
same shapes at every step: a batch of B independent windows of ``window`` tokens, one token per
row per step through the model's KV cache. Rows whose window has ended are fed the start token
so the batch keeps its shape; the encoder never uses a token before the decoder could know it.
The Hugging Face model under the bridge (``model.original_model``) runs the steps: the same
weights, without the hook machinery.

**What can still differ** is the machine: other CPU kernels (AVX2 vs AVX-512), other thread
counts, other library versions compute other low bits. The file records them; ``decompress``
sets the recorded thread count, checks the weights' fingerprint before decoding and the data's
checksum after, and raises ``DecodingMismatchError`` naming what differs - never wrong bytes.

**The coder** is ``constriction``'s range coder (``queue.RangeEncoder``, 32-bit words) with its
``Categorical(perfect=False)`` model family: probabilities quantized to 24 bits, every symbol
kept above zero ("leaky"), so an escape (a byte without a token, see ``ByteTable``) or a special
token costs about 24 bits instead of being unrepresentable. ``perfect=True`` (constriction
0.5.0's default) does not finish on a 49k vocabulary.

**Windows** are independent: each starts afresh with the start token, so a longer window
predicts better (more context) and fewer windows batch less. Chunks of ``batch_size`` windows
are coded separately, so they decode separately.

**Workers.** ``runner=`` (``mechlin.LocalRunner()``, ``mechlin.RayRunner(...)``) codes each
chunk as one ``Item`` of the runner, on its workers, and the driver concatenates the chunks in
order: the same file as without a runner, byte for byte, because every worker computes with the
thread count the file records (the driver's ``torch.get_num_threads()`` when compressing, the
header's when decompressing), whatever its own setting. The runner refuses a worker whose model
differs (``model_fingerprint``); ``compress`` also refuses a worker whose environment string
differs from the driver's (its chunk would not decode where the header says). Give
``RayRunner(chunk_size=1)``: a chunk is already a batch of windows.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mechlin._checks import checked
from mechlin.compression.container import (
    DTYPES,
    Header,
    checksum,
    pack,
    parse_environment,
    unpack,
)
from mechlin.compression.tokens import ByteTable
from mechlin.errors import (
    ArgumentError,
    CompressedFileError,
    DecodingMismatchError,
    NotSupportedError,
    WrongModelError,
)
from mechlin.runners import Item, Runner

_TABLES: weakref.WeakKeyDictionary[Any, ByteTable] = weakref.WeakKeyDictionary()
_FINGERPRINTS: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], bytes]] = (
    weakref.WeakKeyDictionary()
)


def byte_table(model: Any) -> ByteTable:
    """The model's ``ByteTable`` (built once per model)."""
    if model not in _TABLES:
        _TABLES[model] = ByteTable(model.tokenizer, int(model.cfg.d_vocab))
    return _TABLES[model]


def _hf(model: Any) -> torch.nn.Module:
    hf = getattr(model, "original_model", None)
    if hf is None:
        raise NotSupportedError(
            f"compression runs the Hugging Face model under a TransformerBridge "
            f"(model.original_model); {type(model).__name__} has none. Load the model with "
            "mechlin.load_model"
        )
    if hf.training:
        raise ArgumentError(
            "the model is in training mode (dropout would make every run differ): call "
            "model.eval() before compressing or decompressing"
        )
    return hf


def model_fingerprint(model: Any) -> bytes:
    """8 bytes naming the model's weights: blake2b over every tensor of its state dict, in
    name order (cached per model until a weight changes in place)."""
    hf = _hf(model)
    state = hf.state_dict()
    try:
        versions: tuple[Any, ...] = tuple((t.data_ptr(), t._version) for t in state.values())
    except RuntimeError:  # inference tensors have no version counter: hash every time
        versions = (-1,)
    cached = _FINGERPRINTS.get(hf)
    if cached is not None and cached[0] == versions and versions != (-1,):
        return cached[1]
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    _FINGERPRINTS[hf] = (versions, digest.digest())
    return _FINGERPRINTS[hf][1]


def start_token(model: Any) -> int:
    """The token every window starts from: BOS, else EOS."""
    tok = model.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if start is None:
        raise NotSupportedError(
            "compression starts each window from the tokenizer's BOS (or EOS) token; this "
            "tokenizer has neither"
        )
    return int(start)


def environment(model: Any) -> str:
    """The settings decoding depends on besides the weights, as one string."""
    import transformers  # noqa: PLC0415

    device = next(_hf(model).parameters()).device
    if device.type == "cuda":
        where = f"cuda:{torch.cuda.get_device_name(device)}"
    else:
        where = f"{device.type}:{torch.backends.cpu.get_cpu_capability()}"
    attention = getattr(_hf(model).config, "_attn_implementation", None) or "default"
    return (
        f"torch {torch.__version__}|transformers {transformers.__version__}|"
        f"constriction {_constriction_version()}|device {where}|attention {attention}|"
        f"matmul {torch.get_float32_matmul_precision()}"
    )


def _constriction_version() -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return version("constriction")


class _Steps:
    """The model's next-symbol probabilities for a batch of windows, one token per step."""

    def __init__(self, model: Any, table: ByteTable) -> None:
        self.hf = _hf(model)
        self.n_ids, self.n_symbols = table.n_ids, table.n_symbols
        coded = torch.zeros(table.n_ids, dtype=torch.bool)
        coded[table.coded_ids] = True
        self.uncoded = ~coded  # special tokens: no bytes, probability 0 (the coder leaks ~2^-24)
        self.device = next(self.hf.parameters()).device
        self.cache: Any = None

    @torch.inference_mode()
    def probabilities(self, fed: np.ndarray) -> np.ndarray:
        """Feed one token per row (``fed``: (B,) ids); the next token's (B, n_symbols) float32
        probabilities, escapes and special tokens at 0."""
        ids = torch.from_numpy(fed).to(self.device)[:, None]  # (B, 1)
        out = self.hf(input_ids=ids, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        logits = out.logits[:, -1, : self.n_ids].float().cpu()  # (B, n_ids)
        probs = torch.zeros(len(fed), self.n_symbols, dtype=torch.float32)  # (B, n_symbols)
        probs[:, : self.n_ids] = torch.softmax(logits, dim=-1)
        probs[:, : self.n_ids][:, self.uncoded] = 0.0
        if not bool(torch.isfinite(probs).all()):
            raise NotSupportedError(
                "the model gave non-finite probabilities (a float16 overflow?): compress with "
                "the model in float32 or bfloat16"
            )
        return probs.numpy()


def _code_chunk(
    model: Any,
    table: ByteTable,
    start: int,
    lengths: list[int],
    choose: Callable[[int, np.ndarray, np.ndarray], np.ndarray],
    bar: Any,
) -> None:
    """The one step loop both directions run: B = len(lengths) windows in lockstep.

    At step t each row is fed its token t-1 (the start token at t = 0, after its window ended,
    and in place of an escape); ``choose(t, rows, probs)`` gets the rows still coding and their
    probabilities and returns their token t (the encoder: the data's; the decoder: the coder's).
    """
    steps = _Steps(model, table)
    n_ids = table.n_ids
    remaining = np.asarray(lengths)
    fed = np.full(len(lengths), start, dtype=np.int64)
    for t in range(max(lengths)):
        probs = steps.probabilities(fed)  # (B, n_symbols)
        rows = np.flatnonzero(remaining > t)
        symbols = choose(t, rows, probs[rows])
        fed = np.full(len(lengths), start, dtype=np.int64)
        fed[rows] = np.where(symbols < n_ids, symbols, start)
        bar.update(len(rows))


def _family() -> Any:
    import constriction  # noqa: PLC0415

    return constriction.stream.model.Categorical(perfect=False)


def _windows(n_tokens: int, window: int, batch_size: int) -> Iterator[list[tuple[int, int]]]:
    """Chunks of windows, each window a [start, end) token range."""
    spans = [(s, min(s + window, n_tokens)) for s in range(0, n_tokens, window)]
    for c in range(0, len(spans), batch_size):
        yield spans[c : c + batch_size]


@contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _dtype_name(model: Any) -> str:
    name = str(next(_hf(model).parameters()).dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise NotSupportedError(f"compression supports weights in {DTYPES}, not {name}")
    return name


def _model_name(model: Any) -> str:
    source = getattr(model, "mechlin_source", None)
    if isinstance(source, dict) and isinstance(source.get("name"), str):
        return str(source["name"])
    return str(getattr(model.cfg, "model_name", type(model).__name__))


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _encode_chunk(
    model: Any, table: ByteTable, start: int, family: Any, tokens: list[np.ndarray], bar: Any
) -> np.ndarray:
    """The range coder's words for one chunk: the windows ``tokens`` (int32 ids each)."""
    import constriction  # noqa: PLC0415

    encoder = constriction.stream.queue.RangeEncoder()

    def encode(t: int, rows: np.ndarray, probs: np.ndarray) -> np.ndarray:
        symbols = np.array([tokens[r][t] for r in rows], dtype=np.int32)
        try:
            encoder.encode(symbols, family, probs)
        except (ValueError, RuntimeError) as e:
            raise NotSupportedError(
                f"the range coder refused step {t} ({type(e).__name__}: {e})"
            ) from None
        return symbols

    _code_chunk(model, table, start, [len(w) for w in tokens], encode, bar)
    return np.asarray(encoder.get_compressed())


def _decode_chunk(
    model: Any,
    table: ByteTable,
    family: Any,
    header: Header,
    lengths: list[int],
    words: np.ndarray,
    bar: Any,
) -> list[int]:
    """The token ids of one chunk (its windows one after the other), decoded from ``words``."""
    import constriction  # noqa: PLC0415

    decoder = constriction.stream.queue.RangeDecoder(words)
    decoded: list[list[int]] = [[] for _ in lengths]

    def decode(t: int, rows: np.ndarray, probs: np.ndarray) -> np.ndarray:
        try:
            symbols = np.asarray(decoder.decode(family, probs), dtype=np.int32)
        except (ValueError, RuntimeError, AssertionError) as e:
            raise DecodingMismatchError(
                f"decoding failed inside the range coder at step {t} "
                f"({type(e).__name__}: {e}); {_differences(header, model)}"
            ) from None
        for r, s in zip(rows, symbols, strict=True):
            decoded[r].append(int(s))
        return symbols

    _code_chunk(model, table, header.start, lengths, decode, bar)
    return [s for row in decoded for s in row]


def _worker_table(model: Any, table_fingerprint: bytes) -> ByteTable:
    """The worker's ``ByteTable``, refused unless it is the file's."""
    table = byte_table(model)
    if table.fingerprint != table_fingerprint:
        raise WrongModelError(
            f"a worker's model has another token table (fingerprint {table.fingerprint.hex()}) "
            f"than the file's ({table_fingerprint.hex()}): give the runner the very same model"
        )
    return table


def _encode_work(model: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """One chunk's words, computed with the file's thread count (the runners' unit of work),
    and the environment they were computed in."""
    table = _worker_table(model, payload["table"])
    with _threads(payload["threads"]):
        words = _encode_chunk(
            model, table, payload["start"], _family(), payload["tokens"], _NoBar()
        )
    return {"words": words, "environment": environment(model)}


def _decode_work(model: Any, payload: dict[str, Any]) -> np.ndarray:
    """One chunk's token ids, decoded with the file's thread count (the runners' unit of work)."""
    header: Header = payload["header"]
    table = _worker_table(model, header.table_fingerprint)
    with _threads(header.threads):
        ids = _decode_chunk(
            model, table, _family(), header, payload["lengths"], payload["words"], _NoBar()
        )
    return np.asarray(ids, dtype=np.int64)


@checked
def compress(
    model: Any,
    data: bytes,
    *,
    window: int = 1024,
    batch_size: int = 64,
    progress: bool = True,
    runner: Runner | None = None,
) -> bytes:
    """``data`` compressed with ``model``: any bytes (empty, invalid UTF-8, NULs, ...).

    ``window``: tokens per independent window (more context, better prediction; at most the
    model's context length). ``batch_size``: windows coded together in one chunk (faster per
    token; each chunk decodes on its own). ``decompress(model, blob)`` gives ``data`` back on a
    machine that computes the model the same way; the file records what that takes.
    ``runner``: ``None`` codes here; ``mechlin.RayRunner(...)`` codes each chunk on a Ray worker
    with this process's ``torch.get_num_threads()`` (the file is the same byte for byte).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CompressedFileError(f"compress takes bytes, not {type(data).__name__}")
    data = bytes(data)
    n_ctx = int(getattr(model.cfg, "n_ctx", window) or window)
    if window > n_ctx:
        raise ArgumentError(f"compress: window={window} exceeds the model's context ({n_ctx})")
    dtype = _dtype_name(model)
    table = byte_table(model)
    ids = table.encode(data).ids
    if table.decode(ids) != data:  # by construction never; checked while the data is here
        raise NotSupportedError("the tokens do not give back the data (a mechlin bug): report it")
    start = start_token(model)
    threads = torch.get_num_threads()
    here = environment(model)
    batches = [
        [np.asarray(ids[a:b], dtype=np.int32) for a, b in spans]
        for spans in _windows(len(ids), window, batch_size)
    ]
    if runner is None:
        family = _family()
        with tqdm(total=len(ids), desc="compress", unit="tok", disable=not progress) as bar:
            chunks = [_encode_chunk(model, table, start, family, b, bar) for b in batches]
    else:
        options = dict(table=table.fingerprint, start=start, threads=threads)
        items = [
            Item(f"chunk{c:06d}", dict(options, tokens=b), size=sum(len(w) for w in b))
            for c, b in enumerate(batches)
        ]
        got = runner.map(model, _encode_work, items, progress=progress, desc="compress", unit="tok")
        chunks = []
        for item in items:
            record = got[item.key]
            if record["environment"] != here:
                raise ArgumentError(
                    f"compress: a worker of {runner!r} coded {item.key} in another environment "
                    f"than this process ({_compare(here, record['environment'], 'here', 'there')})"
                    ": the file records one; run the workers on machines like this one"
                )
            chunks.append(record["words"])
    header = Header(
        model_name=_model_name(model),
        model_fingerprint=model_fingerprint(model),
        table_fingerprint=table.fingerprint,
        dtype=dtype,
        window=window,
        batch=batch_size,
        threads=threads,
        start=start,
        environment=here,
        n_bytes=len(data),
        n_tokens=len(ids),
        data_checksum=checksum(data),
    )
    return pack(header, chunks)


def _compare(written: str, here: str, a: str = "written with", b: str = "here") -> str:
    """The parts of two environment strings that differ, in words ("" if none)."""
    now = parse_environment(here)
    return "; ".join(
        f"{key}: {a} {value!r}, {b} {now.get(key)!r}"
        for key, value in parse_environment(written).items()
        if now.get(key) != value
    )


def _differences(header: Header, model: Any) -> str:
    """What differs between the writer's recorded environment and this one, in words."""
    return _compare(header.environment, environment(model)) or (
        "the recorded environment matches this one, so this machine's CPU kernels "
        "compute the model's low bits differently (another CPU model or BLAS)"
    )


@checked
def decompress(
    model: Any, blob: bytes, *, progress: bool = True, runner: Runner | None = None
) -> bytes:
    """The bytes ``compress(model, data)`` was given; raises ``CompressedFileError`` for data
    that is damaged or not mechlin's, ``WrongModelError`` for another model, and
    ``DecodingMismatchError`` when this machine computes the model differently.

    ``runner``: ``None`` decodes here; ``mechlin.RayRunner(...)`` decodes each chunk on a Ray
    worker, with the thread count the file records (its error, if any, is raised here)."""
    header, chunks = unpack(blob)
    if header.dtype != _dtype_name(model):
        raise WrongModelError(
            f"this file was compressed with the model in {header.dtype}; the given model is in "
            f"{_dtype_name(model)}: load it with dtype={header.dtype!r}"
        )
    table = byte_table(model)
    if header.table_fingerprint != table.fingerprint:
        raise WrongModelError(
            f"this file was compressed with {header.model_name!r}, whose tokenizer differs "
            "from the given model's (table fingerprint "
            f"{header.table_fingerprint.hex()} vs {table.fingerprint.hex()}): load that model"
        )
    if header.model_fingerprint != model_fingerprint(model):
        raise WrongModelError(
            f"this file was compressed with {header.model_name!r} (weights fingerprint "
            f"{header.model_fingerprint.hex()}); the given model's weights differ "
            f"({model_fingerprint(model).hex()}): load the model it was written with"
        )
    start = start_token(model)
    if start != header.start:
        raise WrongModelError(
            f"this file's windows start from token {header.start}; the given model's tokenizer "
            f"starts from {start} (another BOS/EOS setting): load the tokenizer it was written with"
        )
    lengths = [
        [b - a for a, b in spans]
        for spans in _windows(header.n_tokens, header.window, header.batch)
    ]
    ids: list[int] = []
    if runner is None:
        family = _family()
        with (
            _threads(header.threads),
            tqdm(total=header.n_tokens, desc="decompress", unit="tok", disable=not progress) as bar,
        ):
            for n, words in zip(lengths, chunks, strict=True):
                ids += _decode_chunk(model, table, family, header, n, words, bar)
    else:
        items = [
            Item(f"chunk{c:06d}", dict(header=header, lengths=n, words=words), size=sum(n))
            for c, (n, words) in enumerate(zip(lengths, chunks, strict=True))
        ]
        got = runner.map(
            model, _decode_work, items, progress=progress, desc="decompress", unit="tok"
        )
        for item in items:
            ids += got[item.key].tolist()
    data = table.decode(ids)
    if len(data) != header.n_bytes or checksum(data) != header.data_checksum:
        raise DecodingMismatchError(
            "the decoded bytes do not match the original's checksum although the file is "
            f"intact and the weights are the writer's: {_differences(header, model)}. "
            f"Decode on a machine like the writer's (threads={header.threads}, "
            f"{header.environment})"
        )
    return data


@checked
def read_header(blob: bytes) -> Header:
    """What a compressed file says about itself (model, window, environment, sizes)."""
    return unpack(blob)[0]
