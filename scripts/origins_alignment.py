"""Context vs unembedding directions on real models, with a permutation baseline and intervals.

Jiang et al. (2024) check on LLaMA-2 that a concept's direction among final hidden states aligns
with its unembedding direction; this runs mechlin's version of that check
(``mechlin.origins.alignment_report``: the shipped concepts, ``default_contexts``, the causal
and the Euclidean inner product) on each model and writes the JSON summary.

    OMP_NUM_THREADS=1 python scripts/origins_alignment.py \\
        --out docs/reproductions/data/jiang2024-alignment.json
    python scripts/origins_alignment.py --models ./my-model-folder --out /tmp/alignment.json
"""

from __future__ import annotations

import argparse
import sys

from mechlin.origins import alignment_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--n-permutations", type=int, default=1000)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pairs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    report = alignment_report(
        args.models,
        args.out,
        n_permutations=args.n_permutations,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        max_pairs=args.max_pairs,
        device=args.device,
    )
    for name, entry in report["models"].items():
        seconds = entry["seconds"]
        print(f"{name}: load {seconds['load']:.0f} s, measure {seconds['measure']:.0f} s")
        for ip in ("causal", "euclidean"):
            s = entry[ip]
            lo, hi = s["matched_mean_interval"]
            p_lo, p_hi = s["permutation_interval"]
            x_lo, x_hi = s["mismatched_mean_abs_interval"]
            print(
                f"  {ip:9s} {s['n_concepts']} concepts: matched {s['matched_mean']:.3f} "
                f"[{lo:.3f}, {hi:.3f}] vs permuted {s['permutation_mean']:.3f} "
                f"[{p_lo:.3f}, {p_hi:.3f}], p = {s['p_value']:.3g}; mismatched |cos| "
                f"{s['mismatched_mean_abs']:.3f} [{x_lo:.3f}, {x_hi:.3f}]; matched wins "
                f"{s['fraction_matched_wins']:.0%} of rows"
            )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
