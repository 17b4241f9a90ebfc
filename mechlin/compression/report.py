"""A model's compression beside the classic compressors, on the same bytes.

``compression_report(model, data)`` codes ``data`` for real (``compress``), decodes it again to
prove the roundtrip, measures the model's surprisal with the coder's windows, and compresses the
same bytes with gzip -9, xz -9e, zstd -19 and brotli 11. The result puts them side by side in
bits per byte and draws the surprise map of the text.

The classic compressors' sizes include their own headers (gzip 18 bytes, xz 60, zstd about 10,
brotli a few), as the model's includes mechlin's (about 90 bytes): every figure is the size of a
file that decodes on its own, given the model.
"""

from __future__ import annotations

import gzip
import html
import lzma
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechlin import viz
from mechlin._checks import checked
from mechlin.compression.bits import Surprisal, surprisal
from mechlin.compression.coder import compress, decompress, read_header
from mechlin.errors import ArgumentError, DecodingMismatchError
from mechlin.results import Result

CLASSIC = ("gzip -9", "xz -9e", "zstd -19", "brotli 11")


def classic_sizes(data: bytes) -> dict[str, int]:
    """The size of ``data`` compressed by each classic compressor at its strongest setting."""
    import brotli  # noqa: PLC0415
    import zstandard  # noqa: PLC0415

    return {
        "gzip -9": len(gzip.compress(data, compresslevel=9, mtime=0)),
        "xz -9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
        "zstd -19": len(zstandard.ZstdCompressor(level=19).compress(data)),
        "brotli 11": len(brotli.compress(data, quality=11)),
    }


@dataclass(frozen=True)
class CompressionReport(Result):
    """The model's real coded size, its surprisal, and the classic compressors', on one text."""

    surprisal: Surprisal
    coded_bytes: int  # the file compress() wrote, header included
    header_bytes: int
    classic: dict[str, int]  # compressor -> bytes
    encode_seconds: float
    decode_seconds: float
    window: int
    batch_size: int

    @property
    def n_bytes(self) -> int:
        return self.surprisal.n_bytes

    def bits_per_byte(self) -> dict[str, float]:
        """Every method's bits per byte: the model (coded), then each classic compressor."""
        n = max(self.n_bytes, 1)
        name = self.surprisal.model_name
        return {name: 8 * self.coded_bytes / n} | {k: 8 * v / n for k, v in self.classic.items()}

    @property
    def coded_vs_entropy(self) -> float:
        """Coded payload (header excluded) / the model's cross-entropy in bytes, minus 1."""
        ideal = self.surprisal.total_bits / 8
        return (self.coded_bytes - self.header_bytes) / ideal - 1 if ideal else 0.0

    def summary(self) -> str:
        s = self.surprisal
        rates = self.bits_per_byte()
        best = min(self.classic, key=self.classic.__getitem__) if self.classic else None
        lines = [
            f"{s.model_name} compresses {self.n_bytes:,} bytes to {self.coded_bytes:,} "
            f"({rates[s.model_name]:.3f} bits/byte, header {self.header_bytes} bytes; window "
            f"{self.window}, batch {self.batch_size}); decoded back exactly.",
            f"  cross-entropy {s.bits_per_byte:.3f} bits/byte; the coded payload is "
            f"{self.coded_vs_entropy:+.2%} off it",
        ]
        lines += [
            f"  {k:<10} {v:>9,} bytes  {rates[k]:.3f} bits/byte" for k, v in self.classic.items()
        ]
        if best is not None:
            lines.append(
                f"  the model's file is {self.coded_bytes / self.classic[best]:.1%} of the best "
                f"classic one ({best})"
            )
        n_tok = max(s.n_tokens, 1)
        lines.append(
            f"  encode {n_tok / max(self.encode_seconds, 1e-9):.1f} tok/s, decode "
            f"{n_tok / max(self.decode_seconds, 1e-9):.1f} tok/s"
        )
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        fig, ax = viz.axes(ax, figsize=(6.0, 3.5))
        rates = self.bits_per_byte()
        names = list(rates)
        colors = ["tab:red"] + ["tab:gray"] * (len(names) - 1)
        ax.barh(names[::-1], [rates[k] for k in names][::-1], color=colors[::-1])
        for i, k in enumerate(names[::-1]):
            ax.text(rates[k], i, f" {rates[k]:.2f}", va="center", fontsize="small")
        ax.set_xlabel("bits per byte (lower is better)")
        ax.set_title(f"{self.n_bytes:,} bytes")
        return fig

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        sizes = {self.surprisal.model_name: self.coded_bytes} | self.classic
        rates = self.bits_per_byte()
        return pd.DataFrame(
            {"method": list(sizes), "bytes": list(sizes.values()), "bpb": list(rates.values())}
        )

    def _repr_html_(self) -> str:
        return (
            f'<div class="mechlin-result"><b>CompressionReport</b>'
            f"<pre>{html.escape(self.summary())}</pre>{viz.plot_html(self)}"
            f"{self.surprisal.surprise_map(max_tokens=1500)}</div>"
        )

    def report(self, path: str | os.PathLike[str]) -> Path:
        """Write the HTML report (sizes, figure, surprise map; opens offline)."""
        return viz.write_report(
            path,
            f"Compression with {self.surprisal.model_name}",
            [
                ("Summary", f"<pre>{html.escape(self.summary())}</pre>"),
                ("Bits per byte", viz.plot_html(self)),
                ("Bits per token along the text", viz.plot_html(self.surprisal)),
                ("Where the model is surprised", self.surprisal.surprise_map()),
            ],
        )


@checked
def compression_report(
    model: Any,
    data: bytes,
    *,
    window: int = 1024,
    batch_size: int = 64,
    progress: bool = True,
) -> CompressionReport:
    """Compress ``data`` with ``model`` and with the classic compressors; decode to check."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ArgumentError(f"compression_report takes bytes, not {type(data).__name__}")
    data = bytes(data)
    t0 = time.perf_counter()
    blob = compress(model, data, window=window, batch_size=batch_size, progress=progress)
    t1 = time.perf_counter()
    back = decompress(model, blob, progress=progress)
    t2 = time.perf_counter()
    if back != data:  # decompress checks the checksum; this cannot happen unless it is broken
        raise DecodingMismatchError("the roundtrip returned other bytes (a mechlin bug)")
    header = read_header(blob)
    return CompressionReport(
        surprisal=surprisal(model, data, window=window, progress=progress),
        coded_bytes=len(blob),
        header_bytes=header.header_bytes,
        classic=classic_sizes(data),
        encode_seconds=t1 - t0,
        decode_seconds=t2 - t1,
        window=window,
        batch_size=batch_size,
    )
