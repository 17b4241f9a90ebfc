"""compress / decompress: exact on any bytes, in fresh processes; clear errors, no wrong bytes."""

from __future__ import annotations

import dataclasses
import lzma
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import mechlin
from mechlin.compression import coder as coder_module
from mechlin.compression import compress, decompress, read_header
from mechlin.compression.container import pack, unpack
from mechlin.errors import (
    ArgumentError,
    CompressedFileError,
    DecodingMismatchError,
    WrongModelError,
)

from .test_tokens import HARD

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("data", HARD, ids=range(len(HARD)))
def test_roundtrip_is_exact_on_every_kind_of_input(tiny, data: bytes) -> None:
    blob = compress(tiny, data, window=16, batch_size=3, progress=False)
    assert decompress(tiny, blob, progress=False) == data


def test_many_chunks_and_a_short_last_window_roundtrip(tiny) -> None:
    data = b"".join(HARD[1:])  # every kind at once: ~1.5k tokens
    blob = compress(tiny, data, window=32, batch_size=4, progress=False)
    header = read_header(blob)
    assert header.n_tokens > 4 * 32  # several chunks, the last one short
    assert header.n_bytes == len(data)
    assert decompress(tiny, blob, progress=False) == data


def test_encoding_twice_gives_the_same_file(tiny) -> None:
    data = HARD[6] + HARD[4]
    a = compress(tiny, data, window=8, batch_size=2, progress=False)
    b = compress(tiny, data, window=8, batch_size=2, progress=False)
    assert a == b  # the same computation twice: bit-identical


def test_header_records_what_decoding_depends_on(tiny) -> None:
    blob = compress(tiny, b"hello world", window=8, batch_size=2, progress=False)
    h = read_header(blob)
    assert (h.window, h.batch, h.dtype, h.threads) == (8, 2, "float32", torch.get_num_threads())
    env = h.environment_parts()
    assert env["torch"] == torch.__version__ and env["device"].startswith("cpu:")
    assert {"transformers", "constriction"} <= set(env)
    assert h.header_bytes < 170  # small: a 2 KB text still beats xz (see the bundled test)


def test_decoding_uses_the_recorded_thread_count(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    data = HARD[6] * 3
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        blob = compress(tiny, data, window=16, batch_size=4, progress=False)
    finally:
        torch.set_num_threads(old)
    assert read_header(blob).threads == 1
    seen: set[int] = set()
    real = coder_module._Steps.probabilities

    def spy(self: object, fed: np.ndarray) -> np.ndarray:
        seen.add(torch.get_num_threads())
        return real(self, fed)  # type: ignore[arg-type]

    monkeypatch.setattr(coder_module._Steps, "probabilities", spy)
    assert decompress(tiny, blob, progress=False) == data
    assert seen == {1}
    assert torch.get_num_threads() == old


def test_damaged_truncated_and_foreign_data_are_refused_before_decoding(tiny) -> None:
    blob = compress(tiny, HARD[6], window=16, batch_size=2, progress=False)
    damaged = bytearray(blob)
    damaged[-3] ^= 0x10
    with pytest.raises(CompressedFileError, match="damaged"):
        decompress(tiny, bytes(damaged), progress=False)
    with pytest.raises(CompressedFileError):
        decompress(tiny, blob[: len(blob) - 5], progress=False)
    with pytest.raises(CompressedFileError, match="ends inside"):
        decompress(tiny, blob[:20], progress=False)
    with pytest.raises(CompressedFileError, match="not mechlin-compressed"):
        decompress(tiny, b"\x1f\x8b gzip data", progress=False)
    for at in (8, 30, len(blob) // 2):  # the header and the payload are both checked
        flipped = bytearray(blob)
        flipped[at] ^= 0x01
        with pytest.raises(CompressedFileError):
            decompress(tiny, bytes(flipped), progress=False)
    with pytest.raises(CompressedFileError, match="version"):
        decompress(tiny, blob[:3] + b"\x09" + blob[4:], progress=False)


def test_another_model_is_refused_by_name(tiny, tiny_no_bos) -> None:
    blob = compress(tiny, b"some text to code", window=8, batch_size=2, progress=False)
    other = mechlin.tiny_model(seed=5)
    with pytest.raises(WrongModelError, match="weights"):
        decompress(other, blob, progress=False)
    half = mechlin.tiny_model(seed=0, dtype="bfloat16")
    with pytest.raises(WrongModelError):
        decompress(half, blob, progress=False)


def test_a_machine_that_computes_differently_raises_and_names_the_difference(
    tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = HARD[6] * 2
    blob = compress(tiny, data, window=16, batch_size=2, progress=False)
    header, chunks = unpack(blob)
    # another machine: other kernels change the low bits of the probabilities
    real = coder_module._Steps.probabilities

    def noisy(self: object, fed: np.ndarray) -> np.ndarray:
        p = real(self, fed)  # type: ignore[arg-type]
        return np.nextafter(p, np.float32(1.0)).astype(np.float32)  # one ulp up

    monkeypatch.setattr(coder_module._Steps, "probabilities", noisy)
    with pytest.raises(DecodingMismatchError, match="CPU kernels"):
        decompress(tiny, blob, progress=False)
    elsewhere = dataclasses.replace(
        header, environment=header.environment.replace("device cpu:", "device cpu:OTHER-")
    )
    with pytest.raises(DecodingMismatchError, match="device: written with"):
        decompress(tiny, pack(elsewhere, chunks), progress=False)


def test_bad_arguments_are_clear_errors(tiny) -> None:
    with pytest.raises(ArgumentError, match="context"):
        compress(tiny, b"x", window=10**6, progress=False)
    with pytest.raises(ArgumentError):
        compress(tiny, b"x", window=0, progress=False)


_FRESH = """
import sys
from pathlib import Path
import mechlin
from mechlin.compression import compress, decompress
model = {load}
src, dst, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
if mode == "compress":
    blob = compress(model, src.read_bytes(), window={window}, batch_size=4, progress=False)
    dst.write_bytes(blob)
else:
    dst.write_bytes(decompress(model, src.read_bytes(), progress=False))
"""


def _in_fresh_process(load: str, window: int, src: Path, dst: Path, mode: str) -> None:
    code = textwrap.dedent(_FRESH.format(load=load, window=window))
    subprocess.run(
        [sys.executable, "-c", code, str(src), str(dst), mode],
        check=True,
        cwd=ROOT,
        timeout=900,
    )


def test_roundtrip_across_fresh_processes_on_a_tiny_model(tmp_path: Path) -> None:
    data = b"".join(HARD)
    (tmp_path / "in").write_bytes(data)
    load = "mechlin.tiny_model(seed=0)"
    _in_fresh_process(load, 32, tmp_path / "in", tmp_path / "z", "compress")
    _in_fresh_process(load, 32, tmp_path / "z", tmp_path / "out", "decompress")
    assert (tmp_path / "out").read_bytes() == data


@pytest.mark.bundled
def test_smollm2_file_from_this_process_decodes_in_a_fresh_one(smollm2, tmp_path: Path) -> None:
    data = b"".join(HARD[:8]) + (ROOT / "README.md").read_bytes()[:1500]
    blob = compress(smollm2, data, window=128, batch_size=4, progress=False)
    (tmp_path / "z").write_bytes(blob)
    load = 'mechlin.load_model("smollm2-135m", device="cpu")'
    _in_fresh_process(load, 128, tmp_path / "z", tmp_path / "out", "decompress")
    assert (tmp_path / "out").read_bytes() == data


@pytest.mark.bundled
def test_a_2kb_text_beats_xz_by_far_header_included(smollm2) -> None:
    data = (ROOT / "README.md").read_bytes()[2000:4048]
    blob = compress(smollm2, data, window=256, batch_size=8, progress=False)
    xz = len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    assert len(blob) < 0.7 * xz, (len(blob), xz)
    assert decompress(smollm2, blob, progress=False) == data
