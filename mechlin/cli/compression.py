"""Compression on the command line: ``mechlin compress`` and ``mechlin decompress`` code a file
with a model (exactly; the file names the model, so ``decompress`` needs no model argument), and
``mechlin bpb`` measures a model's bits per byte on a file beside gzip, xz, zstd and brotli, with
an HTML report of where the model is surprised."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from mechlin.cli._common import MODEL_HELP, Command, _figure, _positive, _pre, _Run, _say
from mechlin.errors import ArgumentError


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    file = Path(path)
    if not file.is_file():
        raise ArgumentError(f"file {path!r} does not exist")
    return file.read_bytes()


def _write(path: str, data: bytes, *, force: bool) -> str:
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return "stdout"
    from mechlin._store import atomic_write  # noqa: PLC0415

    if Path(path).exists() and not force:
        raise ArgumentError(f"{path} exists: pass --force to overwrite it, or -o another file")
    with atomic_write(Path(path)) as tmp:
        tmp.write_bytes(data)
    return path


def cmd_compress(run: _Run) -> None:
    from mechlin.compression import compress  # noqa: PLC0415

    a = run.args
    data = _read(a.input)
    model = run.model(a.model)
    blob = compress(model, data, window=a.window, batch_size=a.batch_size, progress=run.progress)
    target = a.output or ("-" if a.input == "-" else f"{a.input}.mlz")
    where = _write(target, blob, force=a.force)
    rate = 8 * len(blob) / len(data) if data else 0.0
    run.status(f"{len(data):,} -> {len(blob):,} bytes ({rate:.3f} bits/byte), wrote {where}")


def cmd_decompress(run: _Run) -> None:
    from mechlin.compression import decompress, read_header  # noqa: PLC0415

    a = run.args
    blob = _read(a.input)
    header = read_header(blob)
    # the file names its model; a bundled name or folder is loaded only by load_model's rules
    model = run.model(a.model or header.model_name)
    data = decompress(model, blob, progress=run.progress)
    default = a.input.removesuffix(".mlz") if a.input.endswith(".mlz") else f"{a.input}.out"
    target = a.output or ("-" if a.input == "-" else default)
    run.status(f"{len(blob):,} -> {len(data):,} bytes, wrote {_write(target, data, force=a.force)}")


def cmd_bpb(run: _Run) -> None:
    from mechlin.compression import compression_report  # noqa: PLC0415

    a = run.args
    data = _read(a.input)
    model = run.model(a.model)
    report = compression_report(
        model, data, window=a.window, batch_size=a.batch_size, progress=run.progress
    )
    sections = [
        ("Bits per byte", _figure(report)),
        ("Bits per token along the text", _figure(report.surprisal)),
        ("Where the model is surprised", report.surprisal.surprise_map()),
    ]
    if a.stride:
        from mechlin.compression import surprisal  # noqa: PLC0415

        strided = surprisal(model, data, window=a.window, stride=a.stride, progress=run.progress)
        _say(strided.summary())
        sections.append((f"Overlapping windows (stride {a.stride})", _pre(strided.summary())))
    run.finish(f"Compression of {a.input} with {a.model}", report, sections)


COMMANDS: dict[str, Command] = {
    "compress": (
        cmd_compress,
        "compress a file with a model (lossless; writes FILE.mlz)",
        "mechlin compress smollm2-135m notes.md",
    ),
    "decompress": (
        cmd_decompress,
        "decompress a .mlz file (loads the model the file names)",
        "mechlin decompress notes.md.mlz",
    ),
    "bpb": (
        cmd_bpb,
        "bits per byte of a model on a file, beside gzip, xz, zstd and brotli",
        "mechlin bpb smollm2-135m notes.md --window 512",
    ),
}


def add_arguments(p: Mapping[str, argparse.ArgumentParser]) -> None:
    """The arguments of ``compress``, ``decompress`` and ``bpb``."""
    for name in ("compress", "bpb"):
        c = p[name]
        c.add_argument("model", help=MODEL_HELP)
        c.add_argument("input", help="the file ('-': standard input)")
        c.add_argument("--window", type=_positive, default=1024, help="tokens per window")
        c.add_argument("--batch-size", type=_positive, default=64, help="windows per batch")
    p["compress"].add_argument("-o", "--output", help="output file (default: INPUT.mlz)")
    p["bpb"].add_argument(
        "--stride", type=_positive, help="also measure overlapping windows (Huang et al.: 512)"
    )
    d = p["decompress"]
    d.add_argument("input", help="the .mlz file ('-': standard input)")
    d.add_argument("--model", help="the model (default: the one the file names)")
    d.add_argument("-o", "--output", help="output file (default: INPUT without .mlz)")
    for name in ("compress", "decompress"):
        p[name].add_argument("--force", action="store_true", help="overwrite the output file")
