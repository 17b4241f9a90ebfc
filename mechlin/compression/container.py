"""The compressed file: a small self-describing header, then one coded chunk per batch.

Layout (integers are LEB128 varints unless a width is given; all little-endian)::

    b"MLZ" version(1 byte)
    model name (varint length + UTF-8)     the name the model was loaded by (for messages)
    model fingerprint (8 bytes)            blake2b of the model's weights
    table fingerprint (8 bytes)            blake2b of every token's bytes (``ByteTable``)
    dtype (1 byte)  window  batch  threads  start token
    environment (varint length + ASCII)    torch | transformers | constriction | device
    n_bytes  n_tokens
    data checksum (8 bytes)                blake2b of the original bytes
    file checksum (4 bytes)                blake2b of every other byte of the file
    chunks: (varint n_words, n_words uint32 words) per batch of windows

The header is about 90 bytes, most of it the environment string, kept readable so that a
mismatch can be named. Decoding is exact only where the model computes bit-identical
probabilities: the same weights (fingerprint), dtype, threads, library versions and CPU kernels
(``environment``); ``decompress`` compares them and names what differs when the decoded bytes
fail the checksum.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from mechlin.errors import CompressedFileError

MAGIC = b"MLZ"
VERSION = 1
DTYPES = ("float32", "bfloat16", "float16", "float64")


def checksum(data: bytes, size: int = 8) -> bytes:
    """blake2b of ``data``, ``size`` bytes."""
    return hashlib.blake2b(data, digest_size=size).digest()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    """Reads a blob front to back; running out raises ``CompressedFileError``."""

    def __init__(self, blob: bytes) -> None:
        self.blob, self.pos = blob, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.blob):
            raise CompressedFileError(
                f"the compressed data ends inside its {what} (truncated at {len(self.blob)} "
                "bytes): the file is incomplete or damaged"
            )
        out = self.blob[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self, what: str) -> int:
        n = shift = 0
        while True:
            byte = self.take(1, what)[0]
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return n
            if shift > 63:
                raise CompressedFileError(f"the compressed data's {what} is malformed (damaged)")

    def text(self, what: str) -> str:
        raw = self.take(self.varint(what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CompressedFileError(
                f"the compressed data's {what} is not text: the file is damaged"
            ) from None


@dataclass(frozen=True)
class Header:
    """What a compressed file says about itself (``mechlin.compression.read_header``)."""

    model_name: str
    model_fingerprint: bytes
    table_fingerprint: bytes
    dtype: str
    window: int
    batch: int
    threads: int
    start: int  # the token each window starts from (BOS, else EOS)
    environment: str
    n_bytes: int
    n_tokens: int
    data_checksum: bytes
    header_bytes: int = 0  # read, not written: where the payload starts (``unpack`` sets it)

    def environment_parts(self) -> dict[str, str]:
        """``environment`` as {"torch": "2.13.0+cpu", ..., "device": "cpu:avx2"}."""
        return parse_environment(self.environment)


def parse_environment(text: str) -> dict[str, str]:
    """An environment string ("torch 2.13.0|device cpu:AVX2|...") as {name: value}."""
    return dict(part.split(" ", 1) for part in text.split("|") if " " in part)


def pack(header: Header, chunks: list[np.ndarray]) -> bytes:
    """The file: ``header`` then each chunk's uint32 words."""
    name = header.model_name.encode("utf-8")
    env = header.environment.encode("ascii", errors="replace")
    if min(header.window, header.batch, header.threads, header.start, header.n_bytes) < 0:
        raise CompressedFileError("header fields are never negative")
    payload = b"".join(_varint(len(c)) + c.astype("<u4").tobytes() for c in chunks)
    head = b"".join(
        [
            MAGIC,
            bytes([VERSION]),
            _varint(len(name)),
            name,
            header.model_fingerprint,
            header.table_fingerprint,
            bytes([DTYPES.index(header.dtype)]),
            _varint(header.window),
            _varint(header.batch),
            _varint(header.threads),
            _varint(header.start),
            _varint(len(env)),
            env,
            _varint(header.n_bytes),
            _varint(header.n_tokens),
            header.data_checksum,
        ]
    )
    return head + checksum(head + payload, 4) + payload


def unpack(blob: bytes) -> tuple[Header, list[np.ndarray]]:
    """The header and the chunks' words; a blob that is not an intact mechlin file raises
    ``CompressedFileError`` saying so (before any decoding)."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise CompressedFileError(f"decompress takes bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    if blob[:3] != MAGIC:
        raise CompressedFileError(
            "this is not mechlin-compressed data (it does not start with b'MLZ')"
        )
    r = _Reader(blob)
    r.take(3, "magic")
    version = r.take(1, "version")[0]
    if version != VERSION:
        raise CompressedFileError(
            f"this file has format version {version}; this mechlin reads version {VERSION} "
            "(decompress it with the mechlin that wrote it)"
        )
    name = r.text("model name")
    model_fp = r.take(8, "model fingerprint")
    table_fp = r.take(8, "table fingerprint")
    dtype_code = r.take(1, "dtype")[0]
    if dtype_code >= len(DTYPES):
        raise CompressedFileError(f"the file names dtype code {dtype_code}: it is damaged")
    window, batch, threads = r.varint("window"), r.varint("batch"), r.varint("threads")
    start = r.varint("start token")
    env = r.text("environment")
    n_bytes, n_tokens = r.varint("length"), r.varint("token count")
    data_sum = r.take(8, "checksum")
    head = blob[: r.pos]
    file_sum = r.take(4, "file checksum")
    header_bytes = r.pos
    payload = blob[r.pos :]
    if checksum(head + payload, 4) != file_sum:
        raise CompressedFileError(
            "the compressed data is damaged: its checksum does not match "
            f"({len(blob)} bytes); nothing was decoded"
        )
    if window < 1 or batch < 1 or threads < 1:
        raise CompressedFileError("the file's header is damaged (window, batch or threads is 0)")
    chunks = []
    while r.pos < len(blob):
        n = r.varint("chunk length")
        chunks.append(np.frombuffer(r.take(4 * n, "chunk"), dtype="<u4").astype(np.uint32))
    header = Header(
        model_name=name,
        model_fingerprint=model_fp,
        table_fingerprint=table_fp,
        dtype=DTYPES[dtype_code],
        window=window,
        batch=batch,
        threads=threads,
        start=start,
        environment=env,
        n_bytes=n_bytes,
        n_tokens=n_tokens,
        data_checksum=data_sum,
        header_bytes=header_bytes,
    )
    n_windows = -(-n_tokens // window)
    if len(chunks) != -(-n_windows // batch):
        raise CompressedFileError(
            f"the file holds {len(chunks)} coded chunk(s) where its header needs "
            f"{-(-n_windows // batch)}: it is damaged"
        )
    return header, chunks
