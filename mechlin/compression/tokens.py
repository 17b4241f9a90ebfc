"""Any bytes as model tokens and back, without trusting the tokenizer to round-trip.

A compressor must return exactly the bytes it was given: empty input, invalid UTF-8, NULs,
CRLF, emoji. Tokenizers do not promise that (normalizers rewrite text; a string cannot hold
invalid UTF-8). So mechlin decodes tokens with its own table, ``ByteTable``: each token id and
the bytes it stands for, read from the vocabulary itself.

- Byte-level BPE (GPT-2, SmolLM2, Qwen, ...; the ``ByteLevel`` decoder): each character of a
  token is one byte through GPT-2's ``bytes_to_unicode`` map.
- SentencePiece-style vocabularies (Llama-2, Gemma; a decoder that replaces ``"▁"`` with a
  space and has ``ByteFallback``): ``"▁"`` is a space, ``<0xNN>`` is the byte ``NN``.

Special tokens (BOS, EOS, chat markers) stand for no bytes: literal ``"<eos>"`` in the data is
tokenized as text. Encoding splits the data into valid UTF-8 runs and the bytes between them;
each run goes through the tokenizer's Rust backend (with its prefix space turned off), and the
tokens are accepted only when the table gives back the run's bytes exactly. A run that does
not (a normalizer changed it, or the tokenizer dropped a byte it has no token for: SmolLM2
silently drops ``"\x04"``) is retried line by line; lines that still do not are coded as
single-byte tokens, and ``Tokenized.n_fallback_bytes`` counts them. A byte with no token of its
own (SmolLM2 lacks 21, among them ``\x04`` and ``\xff``) becomes an *escape* symbol, id
``n_ids + byte``, past the model's vocabulary: the coder gives it the smallest probability it
can represent (about 24 bits), and the model is fed the start token in its place. So decoding
is exact by construction: ``table.decode(table.encode(data).ids) == data`` always.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mechlin.errors import NotSupportedError

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's ``bytes_to_unicode``, inverted: the character each byte is written as -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _decoder_types(decoder: dict[str, Any] | None) -> list[dict[str, Any]]:
    if decoder is None:
        return []
    if decoder.get("type") == "Sequence":
        return [d for sub in decoder.get("decoders", []) for d in _decoder_types(sub)]
    return [decoder]


@dataclass(frozen=True)
class Tokenized:
    """Data as token ids (``ids``), with how many of its bytes went in as single-byte tokens."""

    ids: list[int]
    n_bytes: int
    n_fallback_bytes: int


class ByteTable:
    """Token id -> the bytes it stands for (``None``: a special token), and bytes -> ids."""

    def __init__(self, tokenizer: Any, n_ids: int) -> None:
        """``n_ids``: the model's vocabulary size (ids from ``n_ids`` on are escapes)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise NotSupportedError(
                f"compression needs a fast (Rust) Hugging Face tokenizer; "
                f"{type(tokenizer).__name__} has no backend_tokenizer"
            )
        spec = {
            part: None
            if getattr(backend, part) is None
            else json.loads(getattr(backend, part).__getstate__())
            for part in ("normalizer", "pre_tokenizer", "decoder")
        }
        kinds = {d.get("type") for d in _decoder_types(spec.get("decoder"))}
        if "ByteLevel" in kinds:
            scheme = "byte_level"
        elif "ByteFallback" in kinds and any(
            d.get("type") == "Replace" and d.get("pattern", {}).get("String") == "▁"
            for d in _decoder_types(spec.get("decoder"))
        ):
            scheme = "sentencepiece"
        else:
            raise NotSupportedError(
                f"compression cannot read token bytes from a {sorted(map(str, kinds))} decoder "
                "(supported: byte-level BPE such as GPT-2's, and SentencePiece with byte "
                "fallback such as Llama's and Gemma's)"
            )
        self.scheme = scheme
        special = {int(i) for i, t in backend.get_added_tokens_decoder().items() if t.special}
        vocab = backend.get_vocab(with_added_tokens=True)
        table: list[bytes | None] = [None] * n_ids
        self.n_ids = n_ids
        alphabet = _byte_level_alphabet()
        for piece, i in vocab.items():
            if i in special or i >= n_ids:
                continue
            if scheme == "byte_level":
                if all(c in alphabet for c in piece):
                    table[i] = bytes(alphabet[c] for c in piece)
                else:  # an added, non-special token written as plain text
                    table[i] = piece.encode("utf-8")
            else:
                m = _BYTE_PIECE.fullmatch(piece)
                table[i] = bytes([int(m.group(1), 16)]) if m else piece.replace("▁", " ").encode()
        self.token_bytes: tuple[bytes | None, ...] = tuple(table)
        byte_ids: dict[int, int] = {}
        pieces = _byte_pieces(vocab)
        for i, b in enumerate(table):
            if b is not None and len(b) == 1 and (b[0] not in byte_ids or i in pieces):
                byte_ids[b[0]] = i
        # a byte without a token of its own: its escape symbol
        self.byte_ids: tuple[int, ...] = tuple(byte_ids.get(b, n_ids + b) for b in range(256))
        self.n_escaped = sum(i >= n_ids for i in self.byte_ids)
        # ASCII bytes without a token are cut out of the text before the tokenizer sees it
        cut = "".join(re.escape(chr(b)) for b in range(128) if self.byte_ids[b] >= n_ids)
        self._cut = re.compile(f"[\udc80-\udcff{cut}]+")
        self._backend = _plain_backend(backend, spec)

    @property
    def fingerprint(self) -> bytes:
        """8 bytes naming the table (what decoding depends on): a hash of every token's bytes."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(self.n_ids.to_bytes(8, "little"))
        for b in self.token_bytes:
            digest.update(b"\xff" if b is None else len(b).to_bytes(2, "little") + b)
        return digest.digest()

    @property
    def coded_ids(self) -> list[int]:
        """The model ids that stand for bytes (with the escapes, all a coded stream holds)."""
        return [i for i, b in enumerate(self.token_bytes) if b is not None]

    @property
    def n_symbols(self) -> int:
        """The coder's alphabet: the model's ids, then one escape per byte value."""
        return self.n_ids + 256

    def encode(self, data: bytes) -> Tokenized:
        """``data`` as token ids whose bytes, joined, are ``data`` exactly."""
        ids: list[int] = []
        fallback = 0
        text = data.decode("utf-8", errors="surrogateescape")
        pos = 0
        for m in [*self._cut.finditer(text), None]:
            end = m.start() if m is not None else len(text)
            if end > pos:
                fallback += self._encode_text(text[pos:end], ids)
            if m is not None:
                raw = m.group().encode("utf-8", errors="surrogateescape")
                ids += [self.byte_ids[b] for b in raw]
                fallback += len(raw)
                pos = m.end()
        return Tokenized(ids=ids, n_bytes=len(data), n_fallback_bytes=fallback)

    def _encode_text(self, text: str, out: list[int]) -> int:
        """Append ``text``'s tokens to ``out``; the number of bytes coded one by one."""
        want = text.encode("utf-8")
        got = _plain_ids(self._backend, text)
        table = self.token_bytes
        if all(i < self.n_ids and table[i] is not None for i in got) and self.decode(got) == want:
            out += got
            return 0
        lines = text.splitlines(keepends=True)
        if len(lines) == 1:
            out += [self.byte_ids[b] for b in want]
            return len(want)
        return sum(self._encode_text(line, out) for line in lines)

    def decode(self, ids: list[int]) -> bytes:
        """The bytes ``ids`` stand for (special tokens stand for none)."""
        table, n = self.token_bytes, self.n_ids
        return b"".join((table[i] or b"") if i < n else bytes([i - n]) for i in ids)


def _plain_ids(backend: Any, text: str) -> list[int]:
    """``text``'s ids from ``backend`` with special-token text read as text and no padding or
    truncation (settings a caller may have left on the user's tokenizer), restored after."""
    reads_special, backend.encode_special_tokens = backend.encode_special_tokens, True
    padding, truncation = backend.padding, backend.truncation
    try:
        if padding is not None:
            backend.no_padding()
        if truncation is not None:
            backend.no_truncation()
        return list(backend.encode(text, add_special_tokens=False).ids)
    finally:
        backend.encode_special_tokens = reads_special
        if padding is not None:
            backend.enable_padding(**padding)
        if truncation is not None:
            backend.enable_truncation(**truncation)


def _byte_pieces(vocab: dict[str, int]) -> set[int]:
    """Ids of ``<0xNN>`` pieces (preferred as byte tokens over a one-byte text piece)."""
    return {i for piece, i in vocab.items() if _BYTE_PIECE.fullmatch(piece)}


def _plain_backend(backend: Any, spec: dict[str, Any]) -> Any:
    """The tokenizer's backend, or a copy of it that adds no prefix space, when it adds one.

    ``spec``: the backend's normalizer and pre-tokenizer as JSON. The caller passes
    ``add_special_tokens=False`` and reads special-token text as text; truncation and padding
    would drop or add tokens, so a backend with them is copied without them too. The copy
    (``to_str``/``from_str``: seconds for a 262k vocabulary) is made only when needed.
    """

    def off(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: off(v) for k, v in node.items()}
            if node.get("type") == "ByteLevel" and "add_prefix_space" in node:
                node["add_prefix_space"] = False
            if node.get("type") == "Metaspace":
                node["prepend_scheme"] = "never"
            if node.get("type") == "Prepend":
                return None
            return node
        if isinstance(node, list):
            return [x for x in (off(v) for v in node) if x is not None]
        return node

    plain = {}
    for key in ("normalizer", "pre_tokenizer"):
        plain[key] = off(spec.get(key))
        if isinstance(plain[key], dict) and plain[key].get("type") == "Sequence":
            sub = "normalizers" if key == "normalizer" else "pretokenizers"
            if not plain[key].get(sub):
                plain[key] = None
    if all(plain[k] == spec.get(k) for k in plain):
        return backend  # padding and truncation are turned off per call (``_plain_ids``)
    from tokenizers import Tokenizer  # noqa: PLC0415

    full = json.loads(backend.to_str())
    full.update(plain, truncation=None, padding=None)
    return Tokenizer.from_str(json.dumps(full))
