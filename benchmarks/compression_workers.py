"""Compression on Ray workers: seconds to encode and decode here vs on N workers, same file.

Each chunk (``batch_size`` windows) is one item of the runner; the workers code them with this
process's thread count, so the file must equal the one written here byte for byte (checked, and
the run fails otherwise). The workers are started (each loads the model) before the timed
runs; their start is timed separately.

    OMP_NUM_THREADS=1 python benchmarks/compression_workers.py --model smollm2-135m \\
        --bytes 8192 --window 128 --batch-size 16 --workers 2

Writes the summary as JSON (``--json``, default
benchmarks/results/compression-workers-MODEL.json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import mechlin
from mechlin.compression import compress, decompress, read_header
from mechlin.runners import RayRunner

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "benchmarks" / "corpus" / "mechlin-2026.txt"


def _timed(f: Callable[..., Any], *args: Any, **kw: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = f(*args, **kw)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--bytes", type=int, default=8192, help="use the first N bytes")
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    import ray

    model = (
        mechlin.tiny_model(seed=0)
        if a.model == "tiny"
        else mechlin.load_model(a.model, device="cpu")
    )
    data = a.corpus.read_bytes()[: a.bytes]
    options = dict(window=a.window, batch_size=a.batch_size, progress=False)
    threads = torch.get_num_threads()
    here, enc_here = _timed(compress, model, data, **options)
    back, dec_here = _timed(decompress, model, here, progress=False)
    header = read_header(here)
    n_windows = -(-header.n_tokens // a.window)
    ray.init(num_cpus=a.workers, include_dashboard=False, log_to_driver=False)
    with RayRunner(num_workers=a.workers, chunk_size=1, torch_threads=threads) as runner:
        _, start = _timed(compress, model, data[:64], runner=runner, **options)  # loads models
        there, enc_there = _timed(compress, model, data, runner=runner, **options)
        back_there, dec_there = _timed(decompress, model, here, runner=runner, progress=False)
    ray.shutdown()
    out: dict[str, Any] = {
        "model": a.model,
        "n_bytes": len(data),
        "n_tokens": header.n_tokens,
        "window": a.window,
        "batch_size": a.batch_size,
        "n_chunks": -(-n_windows // a.batch_size),
        "threads": threads,
        "cores": os.cpu_count(),
        "workers": a.workers,
        "identical": there == here,
        "exact": back == data and back_there == data,
        "encode_s": {"here": enc_here, "workers": enc_there},
        "decode_s": {"here": dec_here, "workers": dec_there},
        "workers_start_s": start,
    }
    print(
        f"{a.model} on {len(data):,} bytes ({header.n_tokens:,} tokens, {out['n_chunks']} "
        f"chunks of {a.batch_size} windows of {a.window}); {threads} thread(s) each"
    )
    print(f"  file on {a.workers} workers identical to the one here: {out['identical']}")
    print(f"  exact roundtrip here and on the workers: {out['exact']}")
    print(f"  start {a.workers} workers (each loads the model): {start:.1f} s")
    for what in ("encode", "decode"):
        h, w = (enc_here, enc_there) if what == "encode" else (dec_here, dec_there)
        print(f"  {what}: here {h:.1f} s, {a.workers} workers {w:.1f} s ({h / w:.2f}x)")
    path = a.json or ROOT / "benchmarks" / "results" / f"compression-workers-{a.model}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"  wrote {path}")
    if not (out["identical"] and out["exact"]):
        raise SystemExit("the file on the workers differs, or a roundtrip was not exact")


if __name__ == "__main__":
    main()
