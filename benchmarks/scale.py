"""Scale-out: average_causal_effects in one process against 2 Ray workers, on this machine.

Measures, on smollm2-135m and the first ``--n-facts`` known facts of known_1000:
  single        average_causal_effects in this process, torch on every core
  ray           the same with mechlin.RayRunner(num_workers=2): 2 actors of 1 CPU each, each
                loading the model once (the load is timed apart and not counted)
  overhead      seconds Ray adds per item: a RayRunner mapping a no-op work function over
                ``--n-noop`` items, per item, chunk_size 1 (what a fact pays besides its trace)
and prints facts per minute of each, their ratio, the per-cell cost (seconds per restored
(layer, position) cell of one kind), and whether the two results are bit-identical (they are
when both use one torch thread per process: run with --threads 1).

Run: .venv/bin/python benchmarks/scale.py [--n-facts 6] [--n-samples 3] [--kinds resid]
     [--threads N] [--n-noop 200]
"""

from __future__ import annotations

import argparse
import time

import torch

import mechlin
from mechlin.datasets.facts import known_facts, load_known_1000
from mechlin.runners import Item, RayRunner


def _noop(model: object, payload: int) -> int:
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-facts", type=int, default=6)
    parser.add_argument("--n-samples", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["resid"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--n-noop", type=int, default=200)
    args = parser.parse_args()

    import ray

    torch.set_num_threads(args.threads)
    model = mechlin.load_model("smollm2-135m", device="cpu")
    known = known_facts(model, load_known_1000()[:200], progress=False)
    facts = list(known.known[: args.n_facts])
    kw = dict(kinds=tuple(args.kinds), n_samples=args.n_samples, progress=False)
    n_cells = sum(
        len(args.kinds) * model.cfg.n_layers * model.to_tokens(f.prompt).shape[1] for f in facts
    )

    mechlin.average_causal_effects(model, facts[:1], **kw)  # warm: embedding_std is cached
    t0 = time.perf_counter()
    single = mechlin.average_causal_effects(model, facts, **kw)
    t_single = time.perf_counter() - t0

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with RayRunner(num_workers=2, chunk_size=1) as runner:
        t0 = time.perf_counter()
        runner.map(model, _noop, [Item("warm", 0)], progress=False)  # starts + loads actors
        t_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        runner.map(model, _noop, [Item(f"n{i}", i) for i in range(args.n_noop)], progress=False)
        overhead = (time.perf_counter() - t0) / args.n_noop
        t0 = time.perf_counter()
        spread = mechlin.average_causal_effects(model, facts, runner=runner, **kw)
        t_ray = time.perf_counter() - t0
    ray.shutdown()

    same = torch.equal(single.aie, spread.aie) and torch.equal(single.se, spread.se)
    print(f"model smollm2-135m, {len(facts)} facts, kinds {args.kinds}, n_samples {args.n_samples}")
    print(f"cells (fact x kind x layer x position): {n_cells}")
    print(
        f"single process ({args.threads} torch threads): {t_single:7.1f} s  "
        f"{60 * len(facts) / t_single:6.2f} facts/min  {t_single / n_cells * 1e3:6.2f} ms/cell"
    )
    print(
        f"2 Ray workers (1 thread each):     {t_ray:7.1f} s  "
        f"{60 * len(facts) / t_ray:6.2f} facts/min  {t_ray / n_cells * 1e3:6.2f} ms/cell"
    )
    print(f"ratio ray / single (facts per minute): {t_single / t_ray:.2f}")
    print(f"Ray start + 2 model loads: {t_start:.1f} s; overhead per item: {overhead * 1e3:.1f} ms")
    print(f"bit-identical results: {same}")


if __name__ == "__main__":
    main()
