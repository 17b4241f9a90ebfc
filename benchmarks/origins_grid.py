"""The batched latent-concept grid against the same instances trained one at a time, in one run.

Issue 37 asks for a sweep of 3 seeds x 3 d x 2 m at convergence "in minutes on 2 cores". The
grid trains every instance of one ``d`` as one ``bmm`` (``mechlin.origins.grid``); the peer is
the same gradient descent run instance by instance (``train_group`` on one instance: the same
code, unbatched), on the same data, the same steps, the same machine, alternating. Both stop
rules are off (``tol=0``), so both run exactly ``--steps`` steps. The table gives seconds per
1000 steps of the whole grid (medians), peer / batched, and the extrapolated wall time of the
reproduction's grid (docs/reproductions/jiang2024.md, 8000 steps).

Run: .venv/bin/python benchmarks/origins_grid.py [--steps 200] [--repeat 3] [--threads N]
     [--smoke] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from mechlin.origins.grid import make_instance, train_group


def _instances(ms, ds, seeds, n_tokens, n_contexts):
    out = []
    for m in ms:
        cp = min(0.5, 3 / m)
        for seed in seeds:
            out += [
                make_instance(
                    m, d, seed, core_prob=cp, role="grid", n_tokens=n_tokens, n_contexts=n_contexts
                )
                for d in ds
            ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny grid, one repetition (CI)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.smoke:
        ms, ds, seeds, n_tok, n_ctx, steps, repeat = (8,), (2, 4), (0, 1), 64, 100, 20, 1
    else:
        ms, ds, seeds, n_tok, n_ctx, steps, repeat = (
            (32, 64),
            (4, 8, 16),
            (0, 1, 2),
            512,
            1000,
            a.steps,
            a.repeat,
        )
    insts = _instances(ms, ds, seeds, n_tok, n_ctx)
    kw = dict(steps=steps, lr=20.0, init_scale=0.01, tol=0.0, plateau=-math.inf, record_every=steps)
    by_d: dict[int, list] = {}
    for inst in insts:
        by_d.setdefault(inst.d, []).append(inst)

    def batched() -> float:
        t0 = time.perf_counter()
        for group in by_d.values():
            train_group(group, **kw)
        return time.perf_counter() - t0

    def one_at_a_time() -> float:
        t0 = time.perf_counter()
        for inst in insts:
            train_group([inst], **kw)
        return time.perf_counter() - t0

    batched()  # warm-up
    times: dict[str, list[float]] = {"batched": [], "one at a time": []}
    for _ in range(repeat):
        times["batched"].append(batched())
        times["one at a time"].append(one_at_a_time())
    med = {k: statistics.median(v) for k, v in times.items()}
    per_k = {k: 1000 * v / steps for k, v in med.items()}
    result = {
        "instances": len(insts),
        "ms": list(ms),
        "ds": list(ds),
        "seeds": list(seeds),
        "n_tokens": n_tok,
        "n_contexts": n_ctx,
        "steps": steps,
        "repeat": repeat,
        "threads": torch.get_num_threads(),
        "seconds": times,
        "seconds_per_1000_steps": per_k,
        "peer_over_batched": med["one at a time"] / med["batched"],
        "reproduction_grid_minutes_at_8000_steps": 8 * per_k["batched"] / 60,
    }
    print(
        f"{len(insts)} instances (m {ms}, d {ds}, seeds {seeds}), {steps} steps, "
        f"{torch.get_num_threads()} threads"
    )
    for k, v in per_k.items():
        print(f"  {k:14s} {v:8.1f} s per 1000 steps (median of {repeat})")
    print(
        f"  one at a time / batched: {result['peer_over_batched']:.2f}x; the grid at 8000 steps: "
        f"{result['reproduction_grid_minutes_at_8000_steps']:.1f} min (without the controls)"
    )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
