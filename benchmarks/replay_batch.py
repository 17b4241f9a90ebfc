"""What a replayed layer costs per call and per row: why few, scattered restorations cost more.

The replay engine (``mechlin.recall._replay``) runs the decoder layers from a restored cell on,
at the positions after it, in batches of (cell, noise sample) rows. This script times one
replay of every layer for batches of several sizes on one prompt's suffix (positions
``--position``..), and fits time per layer call = fixed + rows x per row. On CPU the fixed part
is mostly reading the layer's weights (a batch of a few short rows is bound by memory
bandwidth, not by arithmetic) plus the Python of the layer call; adaptive tracing's screen,
which restores scattered cells on 2 noise samples, pays it in many small batches. It also times
the readout of the same rows (final norm, unembedding, the probability's normaliser:
``mechlin.recall._engines.trace_metric``), whose fixed part is reading the unembedding (671 MB
for gemma-3's 262k tokens): why ``ReplayEngine.cell_scores`` replays positions together and
reads all its batches out at once. And it times the same replays through the HF decoder layers
without the bridge's wrappers and hook points (the same states, checked bit for bit): what the
bridge's Python adds to a layer call.

Run: .venv/bin/python benchmarks/replay_batch.py [--models gemma-3-270m smollm2-135m]
     [--rows 2 10 40] [--position 4] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from transformer_lens.hook_points import HookPoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mechlin
from mechlin.recall._engines import TraceSetup, trace_metric
from mechlin.recall._replay import Replayer

PROMPT = "The Space Needle is located in the city of"


def bare_layer(module: torch.nn.Module) -> torch.nn.Module:
    """A decoder layer without the bridge's wrappers and hook points (shallow copies sharing the
    weights): what the bridge's Python costs per layer call, from the same computation."""
    while hasattr(module, "_original_component"):
        module = module._original_component
    bare = copy.copy(module)
    bare._modules = {
        k: bare_layer(v) for k, v in module._modules.items() if not isinstance(v, HookPoint)
    }
    return bare


def _best(replayer: Replayer, layers: list, hidden, kwargs, cache_of, repeats: int):
    """Best seconds of one replay through ``layers``, and its output."""
    replayer.layers, best = layers, float("inf")
    for _ in range(repeats + 1):  # the first call warms up
        cache = cache_of()
        t0 = time.perf_counter()
        out = replayer.replay(0, hidden, {}, kwargs, cache)
        best = min(best, time.perf_counter() - t0)
    return best, out


def time_model(name: str, args: argparse.Namespace) -> list[tuple[int, float, float, float]]:
    """(rows, best seconds per layer call, the same through the bare HF layers, best seconds
    per readout) for each batch size."""
    model = mechlin.load_model(name)
    replayer = Replayer(model)
    tokens = model.to_tokens(PROMPT)
    n_pos, t = tokens.shape[1], args.position
    if not 0 < t < n_pos:
        raise SystemExit(f"--position {t}: pass a position in 1..{n_pos - 1} of {PROMPT!r}")
    n_keep = max(args.rows)
    keys, values = replayer.run(tokens.repeat(n_keep, 1))
    kwargs = replayer.layer_kwargs(tokens, keys, values, t)
    n_layers = len(replayer.layers)
    bridged = replayer.layers
    bare = [bare_layer(layer) for layer in bridged]
    out = []
    for rows in args.rows:
        idx = [torch.arange(rows)] * n_layers
        hidden = torch.randn(rows, n_pos - t, int(model.cfg.d_model))

        def cache_of(idx=idx):
            return replayer.prefix_cache(keys, values, t, idx)

        best, states = _best(replayer, bridged, hidden, kwargs, cache_of, args.repeats)
        best_bare, states_bare = _best(replayer, bare, hidden, kwargs, cache_of, args.repeats)
        replayer.layers = bridged
        if not torch.equal(states, states_bare):
            raise SystemExit(f"{name}: the bare layers compute other states than the bridge's")
        final = torch.randn(rows, int(model.cfg.d_model))
        setup = TraceSetup(tokens, tokens, None, (0, 1), int(tokens[0, -1]), None)
        readout = float("inf")
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            trace_metric(model, final, setup, "prob")
            readout = min(readout, time.perf_counter() - t0)
        out.append((rows, best / n_layers, best_bare / n_layers, readout))
    return out


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares: time = fixed + rows x per row."""
    x = torch.tensor([float(r) for r, _ in points])
    y = torch.tensor([v for _, v in points])
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    return float(y.mean() - slope * x.mean()), slope


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["gemma-3-270m", "smollm2-135m"])
    p.add_argument("--rows", nargs="+", type=int, default=[2, 10, 40])
    p.add_argument("--position", type=int, default=4, help="first replayed position")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if len(set(args.rows)) < 2:
        raise SystemExit("--rows: pass at least two batch sizes (the fit needs them)")
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    print(
        "| model | rows | ms per layer call | ms per layer and row | ms per layer call, "
        "bare HF layers | ms per readout |"
    )
    print("|---|---|---|---|---|---|")
    fits = []
    for name in args.models:
        got = time_model(name, args)
        for rows, s, b, r in got:
            print(
                f"| {name} | {rows} | {s * 1e3:.2f} | {s * 1e3 / rows:.2f} | {b * 1e3:.2f} "
                f"| {r * 1e3:.1f} |"
            )
        layer = _fit([(rows, s * 1e3) for rows, s, _, _ in got])
        bare = _fit([(rows, b * 1e3) for rows, _, b, _ in got])
        readout = _fit([(rows, r * 1e3) for rows, _, _, r in got])
        fits.append((name, layer, bare, readout))
    print()
    for name, (fixed, per_row), (b_fixed, b_row), (r_fixed, r_row) in fits:
        print(
            f"{name}: per layer call {fixed:.2f} ms fixed + {per_row:.2f} ms per row "
            f"(the fixed part = {fixed / per_row:.1f} rows); through the bare HF layers "
            f"{b_fixed:.2f} ms + {b_row:.2f} ms per row (same states, bit for bit); per readout "
            f"{r_fixed:.1f} ms fixed + {r_row:.2f} ms per row"
        )


if __name__ == "__main__":
    main()
