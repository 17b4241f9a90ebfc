"""Where an adaptive trace's time goes, next to the exact trace of the same fact.

For each fact and kind: the exact trace (prepare + every cell on every noise sample, as
``causal_trace`` computes it), then ``adaptive_trace`` with its defaults, split into its steps:

  prepare   the clean run, the corrupted run and its caches (the exact trace pays it too)
  estimate  the attribution estimate: one forward and one backward of the corrupted rows
  screen    the screened cells on the screen's noise samples
  refine    the refinement stages: screened cells near the cut on more noise samples
  ranked    the ranked cells completed on every noise sample, with the stratified random
            sample (restored in the same batches)
  other     the rest (the policy's bookkeeping, the result)

with the share of the exact trace's (cell, noise sample) restorations each step ran. The gap
between a step's share of the exact time and its share of the restorations is what it costs to
restore few, scattered cells instead of whole columns.

Run: .venv/bin/python benchmarks/adaptive_profile.py [--model gemma-3-270m] [--kinds resid]
     [--n-facts 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mechlin
from mechlin.recall import adaptive

sys.path.insert(0, str(ROOT / "benchmarks"))
from adaptive_trace import known_facts

STEPS = ("prepare", "estimate", "screen", "refine", "ranked", "other")


def _timed(times: dict, label: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times[label] += time.perf_counter() - t0

    return wrapper


def profile(model, fact, kind: str, n_samples: int) -> dict:
    prep = adaptive.prepare_trace(
        model, fact.prompt, fact.subject, kind=kind, answer=None, window=10, noise="3sigma",
        n_samples=n_samples, seed=0, corrupted_prompt=None, metric="prob", positions=None,
        layers=None, contrast=None, method="auto",
    )  # fmt: skip
    t0 = time.perf_counter()
    prep = adaptive.prepare_trace(
        model, fact.prompt, fact.subject, kind=kind, answer=None, window=10, noise="3sigma",
        n_samples=n_samples, seed=0, corrupted_prompt=None, metric="prob", positions=None,
        layers=None, contrast=None, method="auto",
    )  # fmt: skip
    prep.engine.row_scores(
        prep.setup, prep.site, prep.cells, prep.positions, prep.clean_states, "prob", 1 << 30
    )
    exact = time.perf_counter() - t0
    n_exact = len(prep.cells) * len(prep.positions) * prep.n_rows

    times: dict = defaultdict(float)
    counts: dict = defaultdict(int)
    originals = (
        adaptive.prepare_trace,
        adaptive.estimate_grid,
        adaptive._Restorer.restore,
    )
    # The policy restores the screen on some noise samples first, then each refinement stage on
    # more of them, then the ranked cells (and the random sample) on every sample (rows=None).

    def restore(self, cells, rows=None):
        if rows is None:
            label = "ranked"
        else:
            label = "refine" if "screen" in counts else "screen"
        before = self.n_restored
        _timed(times, label, originals[2])(self, cells, rows)
        counts[label] += self.n_restored - before

    adaptive.prepare_trace = _timed(times, "prepare", originals[0])
    adaptive.estimate_grid = _timed(times, "estimate", originals[1])
    adaptive._Restorer.restore = restore
    try:
        t0 = time.perf_counter()
        adaptive.adaptive_trace(model, fact.prompt, fact.subject, kind=kind, n_samples=n_samples)
        total = time.perf_counter() - t0
    finally:
        adaptive.prepare_trace, adaptive.estimate_grid = originals[0], originals[1]
        adaptive._Restorer.restore = originals[2]
    times["other"] = total - sum(times[s] for s in STEPS if s != "other")
    return {
        "exact": exact,
        "adaptive": total,
        "times": dict(times),
        "shares": {k: v / n_exact for k, v in counts.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--kinds", nargs="+", default=["resid"])
    p.add_argument("--n-facts", type=int, default=3)
    p.add_argument("--n-samples", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = mechlin.load_model(args.model)
    import scipy.stats  # noqa: F401  (imported once by adaptive_trace; not a step's time)

    facts = known_facts(model, args.n_facts)
    print(
        "| kind | fact | exact s | adaptive s | speed-up | "
        + " | ".join(f"{s} s (restorations)" for s in STEPS)
        + " |"
    )
    print("|---" * (5 + len(STEPS)) + "|")
    sums: dict = defaultdict(lambda: defaultdict(float))
    for kind in args.kinds:
        for i, fact in enumerate(facts):
            r = profile(model, fact, kind, args.n_samples)
            cells = []
            for s in STEPS:
                share = r["shares"].get(s)
                cells.append(f"{r['times'].get(s, 0):.2f}" + (f" ({share:.1%})" if share else ""))
                sums[kind][s] += r["times"].get(s, 0)
            sums[kind]["exact"] += r["exact"]
            sums[kind]["adaptive"] += r["adaptive"]
            print(
                f"| {kind} | {i} | {r['exact']:.2f} | {r['adaptive']:.2f} | "
                f"{r['exact'] / r['adaptive']:.1f}x | " + " | ".join(cells) + " |"
            )
    for kind, t in sums.items():
        parts = ", ".join(f"{s} {t[s] / t['exact']:.1%}" for s in STEPS)
        print(
            f"{args.model} {kind}: exact {t['exact']:.1f} s, adaptive {t['adaptive']:.1f} s "
            f"({t['exact'] / t['adaptive']:.1f}x); adaptive steps as shares of the exact time: "
            f"{parts}"
        )


if __name__ == "__main__":
    main()
