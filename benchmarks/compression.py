"""Compression speed and size: encode and decode throughput against the plain batched forward.

The bound for this design is the model's own batched forward over the same windows: the coder
runs the same model one token per step through its KV cache, B windows at a time, plus the
range coder. Target: encode and decode each >= 50% of the forward's tokens/s. Sizes: the real
coded file beside gzip -9, xz -9e, zstd -19 and brotli 11 on the same bytes, and the model's
cross-entropy (``surprisal``) beside the coded size.

    python benchmarks/compression.py --model smollm2-135m            # the unseen corpus, 170 KB
    python benchmarks/compression.py --model tiny --bytes 3000       # CI's quick version

Writes the summary as JSON (``--json``, default benchmarks/results/compression-MODEL.json) so
the figures in docs/compression.md can be re-derived.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import mechlin
from mechlin.compression import classic_sizes, compress, decompress, surprisal
from mechlin.compression.coder import _hf, byte_table, start_token

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "benchmarks" / "corpus" / "mechlin-2026.txt"
TARGET = 0.5


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@torch.inference_mode()
def forward_rate(model: object, ids: list[int], window: int, per_forward: int) -> float:
    """Tokens/s of the plain batched forward over the coder's windows (start token first)."""
    hf, start, n_ids = _hf(model), start_token(model), byte_table(model).n_ids
    ids = [i if i < n_ids else start for i in ids]  # escapes are fed as the start token
    rows = [[start, *ids[a : a + window - 1]] for a in range(0, len(ids), window)]
    rows = [r + [start] * (window - len(r)) for r in rows]
    batch = torch.tensor(rows)
    hf(input_ids=batch[:1, :8])  # warm up
    t = time.perf_counter()
    for c in range(0, len(rows), per_forward):
        hf(input_ids=batch[c : c + per_forward])
    return len(ids) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--bytes", type=int, default=None, help="use the first N bytes")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    model = (
        mechlin.tiny_model(seed=0)
        if a.model == "tiny"
        else mechlin.load_model(a.model, device="cpu")
    )
    data = a.corpus.read_bytes()[: a.bytes]
    ids = byte_table(model).encode(data).ids
    fwd = forward_rate(model, ids, a.window, per_forward=8)
    t0 = time.perf_counter()
    blob = compress(model, data, window=a.window, batch_size=a.batch_size)
    t1 = time.perf_counter()
    back = decompress(model, blob)
    t2 = time.perf_counter()
    exact = back == data
    s = surprisal(model, data, window=a.window)
    classic = classic_sizes(data)
    enc, dec = len(ids) / (t1 - t0), len(ids) / (t2 - t1)
    out = {
        "model": a.model,
        "corpus": str(a.corpus.relative_to(ROOT))
        if a.corpus.is_relative_to(ROOT)
        else str(a.corpus),
        "n_bytes": len(data),
        "n_tokens": len(ids),
        "window": a.window,
        "batch_size": a.batch_size,
        "cpu": _cpu(),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "exact": exact,
        "coded_bytes": len(blob),
        "bpb_coded": 8 * len(blob) / len(data),
        "bpb_entropy": s.bits_per_byte,
        "bpc_entropy": s.bits_per_char,
        "classic_bytes": classic,
        "classic_bpb": {k: 8 * v / len(data) for k, v in classic.items()},
        "forward_tok_s": fwd,
        "encode_tok_s": enc,
        "decode_tok_s": dec,
        "encode_bytes_s": len(data) / (t1 - t0),
        "decode_bytes_s": len(data) / (t2 - t1),
        "encode_ratio": enc / fwd,
        "decode_ratio": dec / fwd,
    }
    print(
        f"{a.model} on {len(data):,} bytes ({len(ids):,} tokens), {out['cpu']}, "
        f"{out['threads']} threads; window {a.window}, batch {a.batch_size}"
    )
    print(f"  exact roundtrip: {exact}")
    print(
        f"  model: {len(blob):,} bytes = {out['bpb_coded']:.3f} bpb "
        f"(cross-entropy {s.bits_per_byte:.3f} bpb, {s.bits_per_char:.3f} bpc)"
    )
    for k, v in classic.items():
        print(f"  {k:<10} {v:,} bytes = {out['classic_bpb'][k]:.3f} bpb")
    print(
        f"  forward {fwd:.1f} tok/s; encode {enc:.1f} tok/s ({enc / fwd:.0%}), "
        f"decode {dec:.1f} tok/s ({dec / fwd:.0%})"
    )
    for what in ("encode", "decode"):
        r = out[f"{what}_ratio"]
        print(f"  target {what} >= {TARGET:.0%} of forward: {'met' if r >= TARGET else 'NOT met'}")
    path = a.json or ROOT / "benchmarks" / "results" / f"compression-{a.model}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"  wrote {path}")
    if not exact:
        raise SystemExit("the roundtrip was not exact")


if __name__ == "__main__":
    main()
