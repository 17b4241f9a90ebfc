"""Cached load time of the bundled models: mechlin's tokenizer path vs AutoTokenizer, in one run.

Every measurement runs in a fresh Python process (nothing cached in-process flatters a
repetition), timed after the imports (`import mechlin, transformers, transformer_lens.model_bridge`
and transformers' tokenizer module, timed separately), with the float cache already built:
  load_model  `mechlin.load_model(name, device="cpu")`: verify the cache (files unchanged
              since a passing check are not hashed again), read the weights and the
              tokenizer, boot the bridge
      peer    the same with the tokenizer read by `AutoTokenizer.from_pretrained(cache_dir)`
              (what `load_model` did before it read tokenizer.json in Rust)
  tokenizer   `mechlin.models._load_tokenizer(cache_dir)` alone
      peer    `AutoTokenizer.from_pretrained(cache_dir)` alone
Repetitions of mechlin and peer alternate, so drifting machine load hits both alike; the table
gives medians (and the fastest run), peer / mechlin, and the median CPU seconds of the timed
call. On a shared machine the load average (printed) moves the wall times; `--threads 1` keeps
torch's intra-op threads from waiting on a busy core, and then the CPU seconds are close to the
wall time an idle machine would give.

Run: .venv/bin/python benchmarks/load_time.py [--models smollm2-135m gemma-3-270m] [--repeat 5]
     [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

# Issue 34: a cached load_model of each bundled model under 3 s (median, after the imports).
TARGET_S = 3.0

_IMPORTS = """
import time
t0 = time.perf_counter()
import torch, mechlin, transformers, transformer_lens.model_bridge
import transformers.models.auto.tokenization_auto
imports = time.perf_counter() - t0
if THREADS:
    torch.set_num_threads(THREADS)
from pathlib import Path
from transformers import AutoTokenizer
from mechlin import models
"""

_CACHE_DIR = "directory = models._float_weights_dir(models.BUNDLED_MODELS[NAME])  # untimed\n"

_SNIPPETS = {
    ("load_model", "mechlin"): "",
    ("load_model", "peer"): (
        "models._load_tokenizer = lambda d: AutoTokenizer.from_pretrained(str(d))\n"
    ),
    ("tokenizer", "mechlin"): _CACHE_DIR,
    ("tokenizer", "peer"): _CACHE_DIR,
}
_TIMED = {
    ("load_model", "mechlin"): 'mechlin.load_model(NAME, device="cpu")',
    ("load_model", "peer"): 'mechlin.load_model(NAME, device="cpu")',
    ("tokenizer", "mechlin"): "models._load_tokenizer(directory)",
    ("tokenizer", "peer"): "AutoTokenizer.from_pretrained(str(directory))",
}


def _code(what: str, who: str, name: str, threads: int) -> str:
    body = (
        _IMPORTS
        + _SNIPPETS[what, who]
        + "t, c = time.perf_counter(), time.process_time()\n"
        + _TIMED[what, who]
        + "\nprint(imports, time.perf_counter() - t, time.process_time() - c)\n"
    )
    return body.replace("NAME", repr(name)).replace("THREADS", str(threads))


def _run(code: str) -> tuple[float, float, float]:
    """Import, wall and CPU seconds of one fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    imports, wall, cpu = out.strip().splitlines()[-1].split()
    return float(imports), float(wall), float(cpu)


def _load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()

    print(f"{os.cpu_count()} CPUs, load average {_load_average()} (1, 5, 15 min)")
    results: dict[str, dict[str, dict[str, float]]] = {}
    imports: list[float] = []
    for name in args.models:
        subprocess.run(  # builds the cache if it is missing (untimed)
            [sys.executable, "-c", f"import mechlin; mechlin.load_model({name!r}, device='cpu')"],
            check=True,
            capture_output=True,
        )
        wall: dict[tuple[str, str], list[float]] = {key: [] for key in _TIMED}
        cpu: dict[tuple[str, str], list[float]] = {key: [] for key in _TIMED}
        for _ in range(args.repeat):
            for what, who in _TIMED:
                imported, seconds, cpu_seconds = _run(_code(what, who, name, args.threads))
                imports.append(imported)
                wall[what, who].append(seconds)
                cpu[what, who].append(cpu_seconds)
        results[name] = {
            what: {
                f"{who}_{stat}": fn(times[what, who])
                for who in ("mechlin", "peer")
                for stat, fn, times in (
                    ("s", statistics.median, wall),
                    ("min_s", min, wall),
                    ("cpu_s", statistics.median, cpu),
                )
            }
            for what in ("load_model", "tokenizer")
        }

    header = (
        f"{'model':<14} {'what':<12} {'mechlin s (min)':>16} {'peer s (min)':>16} "
        f"{'peer/mechlin':>13} {'CPU s mechlin / peer':>21}"
    )
    print(header)
    print("-" * len(header))
    for name, rows in results.items():
        for what, r in rows.items():
            print(
                f"{name:<14} {what:<12} {r['mechlin_s']:>9.2f} ({r['mechlin_min_s']:.2f})"
                f" {r['peer_s']:>9.2f} ({r['peer_min_s']:.2f})"
                f" {r['peer_s'] / r['mechlin_s']:>12.1f}x"
                f" {r['mechlin_cpu_s']:>10.2f} / {r['peer_cpu_s']:.2f}"
            )
    for name, rows in results.items():
        median = rows["load_model"]["mechlin_s"]
        verdict = "met" if median < TARGET_S else "NOT met"
        print(f"target {name}: cached load_model under {TARGET_S:g} s: {verdict} ({median:.2f} s)")
    print(f"imports (fresh process, median): {statistics.median(imports):.2f} s")
    print(f"load average after: {_load_average()}")
    print(json.dumps({"threads": args.threads, "imports_s": statistics.median(imports), **results}))


if __name__ == "__main__":
    main()
