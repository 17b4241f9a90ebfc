"""compression_report, classic_sizes, compression_vs_capability and the command line."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import pytest

import mechlin
from mechlin.cli import main
from mechlin.compression import (
    CompressionCapability,
    CompressionReport,
    classic_sizes,
    compression_report,
    compression_vs_capability,
    surprisal,
)
from mechlin.datasets import load_mcq

TEXT = ("Compression is prediction. " * 8 + "<b>bold</b> & \u00e9\n").encode() * 3


def test_classic_sizes_are_the_compressors_own() -> None:
    sizes = classic_sizes(TEXT)
    assert sizes["gzip -9"] == len(gzip.compress(TEXT, compresslevel=9, mtime=0))
    assert sizes["xz -9e"] == len(lzma.compress(TEXT, preset=9 | lzma.PRESET_EXTREME))
    assert gzip.decompress(gzip.compress(TEXT, compresslevel=9)) == TEXT
    # each size is of a file that decodes on its own: the smallest strong setting wins over
    # the fastest one, and every size is below the text's
    import brotli
    import zstandard

    assert sizes["zstd -19"] <= len(zstandard.ZstdCompressor(level=1).compress(TEXT))
    assert sizes["brotli 11"] <= len(brotli.compress(TEXT, quality=0))
    assert all(v < len(TEXT) for v in sizes.values())
    assert set(sizes) == {"gzip -9", "xz -9e", "zstd -19", "brotli 11"}


def test_report_codes_for_real_and_renders(tiny, tmp_path: Path) -> None:
    r = compression_report(tiny, TEXT, window=32, batch_size=8, progress=False)
    rates = r.bits_per_byte()
    assert rates[r.surprisal.model_name] == pytest.approx(8 * r.coded_bytes / len(TEXT))
    assert abs(r.coded_vs_entropy) < 0.02
    page = r.report(tmp_path / "r.html").read_text()
    assert "<b>bold" not in page and "&lt;" in page  # the text is escaped token by token
    back = CompressionReport.load(r.save(tmp_path / "r.pt"))
    assert back.coded_bytes == r.coded_bytes and back.classic == r.classic
    assert list(r.to_frame()["method"])[1:] == list(r.classic)


def test_capability_pairs_bits_per_char_with_accuracy(tiny, tiny_gemma, tiny_no_bos) -> None:
    # short questions: the tiny models' context is 256 tokens of a 400-token vocabulary
    ds = load_mcq("arc_easy", n=200, seed=0)
    ds = ds.subset([i for i, it in enumerate(ds) if len(it.question) < 60][:12])
    models = {"a": tiny, "b": tiny_gemma, "c": tiny_no_bos}
    c = compression_vs_capability(models, TEXT, [ds], window=32, block_bytes=128, n_boot=50)
    for name, model in models.items():
        s = surprisal(model, TEXT, window=32, progress=False)
        i = c.model_names.index(name)
        # the same bits summed per block: float32 sums in another order
        assert float(c.bits_per_char[i]) == pytest.approx(s.bits_per_char, rel=1e-5)
        want = mechlin.expression_scores(model, ds, progress=False).acc_norm
        assert float(c.accuracy[i]) == pytest.approx(want)
    lo, hi = c.interval()
    assert -1 <= lo <= hi <= 1
    assert c.interval() == (lo, hi)  # seeded: the same resamples
    assert "Pearson r" in c.summary()
    two = CompressionCapability(
        model_names=c.model_names[:2],
        dataset_names=c.dataset_names,
        block_bits=c.block_bits[:2],
        block_chars=c.block_chars,
        correct=c.correct[:2],
        item_set=c.item_set,
        metric=c.metric,
        window=c.window,
        stride=c.stride,
        n_boot=c.n_boot,
        seed=c.seed,
    )
    assert "by construction" in two.summary()
    assert int(c.block_chars.sum()) == len(TEXT.decode())


def test_command_line_roundtrip_and_bpb(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "notes.bin"
    src.write_bytes(TEXT + b"\x00\xff")
    assert main(["compress", "tiny", str(src), "--window", "32", "--quiet"]) == 0
    out = tmp_path / "back.bin"
    zipped = f"{src}.mlz"
    assert main(["decompress", zipped, "--model", "tiny", "-o", str(out), "--quiet"]) == 0
    assert out.read_bytes() == src.read_bytes()
    assert main(["decompress", str(src), "--model", "tiny", "--quiet"]) == 2  # not .mlz data
    assert "not mechlin-compressed" in capsys.readouterr().err
    bpb_args = ["bpb", "tiny", str(src), "--window", "32", "--stride", "8", "--quiet"]
    assert main([*bpb_args, "--out", str(tmp_path / "bpb")]) == 0
    assert (tmp_path / "bpb" / "report.html").is_file()
    assert "bits/byte" in capsys.readouterr().out
