"""Reproduce Jiang et al. (2024), "On the Origins of Linear Representations in LLMs": one command.

    python scripts/reproduce_jiang2024.py --out docs/reproductions/data/jiang2024
    python scripts/reproduce_jiang2024.py --tiny --out /tmp/jiang-tiny      # CI, seconds

Every part saves its result under ``--out`` and a rerun reuses what is there (the grid resumes
mid-training from its store), so an interrupted run loses nothing. ``summary.json`` holds every
number quoted in docs/reproductions/jiang2024.md; the figures go beside it.

1. Linearity rises as the loss falls (``train_origins``, sampled SGD, one model).
2. The METHODS setting at convergence: m = 8 concepts, every token and context, core_prob 0.5,
   d = 16 (enough to reach the optimum), full-batch gradient descent to within ``tol`` nats of
   the closed-form optimum; linearity and the orthogonality of independent vs dependent
   concepts, over seeds.
3. d << m: the (m, d, seed) grid at m in {32, 64}, d in {4, 8, 16}, with the capacity
   (d = m + 1) and support (core_prob 0.5) controls (``origins_grid``).
4. Theorem 4's fixed-embedding case: gradient descent on G against the hard-margin direction.
5. Real models: context vs unembedding directions on both bundled models (full run only).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mechlin import viz
from mechlin.origins import (
    FixedEmbeddingCheck,
    LatentConceptModel,
    OriginsGrid,
    OriginsRun,
    fixed_embedding_check,
    origins_grid,
    train_origins,
)

FULL: dict[str, Any] = {
    "rise": dict(n_concepts=8, steps=2000, record_every=100),
    "methods": dict(
        ms=(8,),
        ds=(16,),
        seeds=(0, 1, 2),
        controls=False,
        core_prob=0.5,
        n_tokens=256,
        n_contexts=6561,
        steps=6000,
        lr=20.0,
        tol=0.02,
        record_every=250,
    ),
    "grid": dict(
        ms=(32, 64), ds=(4, 8, 16), seeds=(0, 1, 2), steps=8000, lr=20.0, tol=0.02, record_every=250
    ),
    "fixed": dict(n_concepts=4, seeds=(0, 1, 2), steps=2**17),
    "models": ("smollm2-135m", "gemma-3-270m"),
}
TINY: dict[str, Any] = {
    "rise": dict(n_concepts=5, steps=300, record_every=50),
    "methods": dict(
        ms=(4,),
        ds=(5,),
        seeds=(0, 1),
        controls=False,
        core_prob=0.5,
        n_tokens=16,
        n_contexts=81,
        steps=400,
        lr=5.0,
        tol=0.05,
        record_every=50,
    ),
    "grid": dict(
        ms=(8,),
        ds=(2, 4),
        seeds=(0, 1),
        n_tokens=64,
        n_contexts=100,
        steps=60,
        lr=20.0,
        tol=0.02,
        record_every=20,
    ),
    "fixed": dict(n_concepts=3, seeds=(0,), steps=2**10),
    "models": (),
}


def _cached(path: Path, cls: Any, make: Any) -> Any:
    if path.exists():
        print(f"  reusing {path}", flush=True)
        return cls.load(path)
    result = make()
    result.save(path)
    return result


def _grid_summary(grid: OriginsGrid) -> list[dict[str, Any]]:
    return [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in cell.items()}
        for cell in grid.cells()
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="the CI version: tiny settings")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--doc", type=Path, help="rewrite this doc's tables from the summary")
    a = ap.parse_args(argv)
    cfg = TINY if a.tiny else FULL
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "tiny": a.tiny,
        "settings": json.loads(json.dumps(cfg)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    times: dict[str, float] = {}

    print("1. linearity as the loss falls", flush=True)
    t0 = time.perf_counter()
    r = cfg["rise"]
    rise = _cached(
        out / "rise.pt",
        OriginsRun,
        lambda: train_origins(
            LatentConceptModel(r["n_concepts"], seed=0),
            steps=r["steps"],
            record_every=r["record_every"],
            progress=a.progress,
        ),
    )
    lin = rise.unembed_linearity.nanmean(1)
    summary["rise"] = {
        "linearity_start": float(lin[0]),
        "linearity_end": float(lin[-1]),
        "excess_start": float(rise.loss[0] - rise.optimum),
        "excess_end": float(rise.loss[-1] - rise.optimum),
        "spearman_linearity_vs_loss": _spearman(lin, rise.loss),
    }
    times["rise"] = time.perf_counter() - t0
    _save(rise.plot(), out / "rise.png")

    print("2. the METHODS setting at convergence", flush=True)
    t0 = time.perf_counter()
    methods = origins_grid(**cfg["methods"], out=out / "methods-store", progress=a.progress)
    summary["methods"] = _grid_summary(methods)
    summary["methods_runs"] = methods.to_frame().to_dict(orient="records")
    times["methods"] = time.perf_counter() - t0

    print("3. d << m: the grid with its controls", flush=True)
    t0 = time.perf_counter()
    grid = origins_grid(**cfg["grid"], out=out / "grid-store", progress=a.progress)
    summary["grid"] = _grid_summary(grid)
    summary["grid_runs"] = grid.to_frame().to_dict(orient="records")
    times["grid"] = time.perf_counter() - t0
    _save(grid.plot(), out / "grid.png")
    _save(methods.plot(), out / "methods.png")

    print("4. fixed context embeddings: gradient descent vs the hard-margin direction", flush=True)
    t0 = time.perf_counter()
    f = cfg["fixed"]
    fixed = []
    for seed in f["seeds"]:
        lcm = LatentConceptModel(f["n_concepts"], edge_prob=0.5, seed=seed)
        fixed.append(
            _cached(
                out / f"fixed-{seed}.pt",
                FixedEmbeddingCheck,
                lambda lcm=lcm: fixed_embedding_check(lcm, steps=f["steps"], progress=a.progress),
            )
        )
    summary["fixed"] = [
        {
            "seed": seed,
            "steps": int(c.steps[-1]),
            "increment_cosine": float(c.increment_cosine[-1]),
            "increment_ratio": float(c.increment_ratio[-1]),
            "log2": math.log(2),
            "direction_cosine": float(c.direction_cosine[-1]),
            "orth_independent": float(c.orth_independent[-1]),
            "orth_dependent": float(c.orth_dependent[-1]),
            "mm_orth_independent": c.mm_orth_independent,
            "mm_orth_dependent": c.mm_orth_dependent,
        }
        for seed, c in zip(f["seeds"], fixed, strict=True)
    ]
    _save(fixed[0].plot(), out / "fixed.png")
    times["fixed"] = time.perf_counter() - t0

    print("5. real models", flush=True)
    if not cfg["models"]:
        print("  skipped in --tiny (the bundled models are the full run's)", flush=True)
        summary["models"] = "skipped: --tiny"
    else:
        from mechlin.origins.alignment import alignment_report  # noqa: PLC0415

        t0 = time.perf_counter()
        path = out / "alignment.json"
        if not path.exists():
            alignment_report(list(cfg["models"]), path)
        summary["models"] = json.loads(path.read_text())
        times["models"] = time.perf_counter() - t0
    summary["seconds"] = times
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str))
    (out / "tables.md").write_text(render_tables(json.loads((out / "summary.json").read_text())))
    if a.doc is not None:
        write_doc(a.doc, json.loads((out / "summary.json").read_text()))
    print(
        f"wrote {out / 'summary.json'}; seconds per part: "
        + ", ".join(f"{k} {v:.0f}" for k, v in times.items()),
        flush=True,
    )
    return 0


BEGIN, END = "<!-- tables:begin (scripts/reproduce_jiang2024.py --doc) -->", "<!-- tables:end -->"


def _ci(cell: list[float], digits: int = 3) -> str:
    mean, lo, hi = cell
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def render_tables(summary: dict[str, Any]) -> str:
    """The doc's tables, from ``summary.json`` alone (a test checks the doc holds them)."""
    out = []
    r = summary["rise"]
    out += [
        "**Table 1. Linearity as the loss falls** (one run, mini-batch SGD, `train_origins`)",
        "",
        "| | start | end |",
        "|---|---|---|",
        f"| linearity of g | {r['linearity_start']:.3f} | {r['linearity_end']:.3f} |",
        f"| loss above the optimum (nats) | {r['excess_start']:.3f} | {r['excess_end']:.3f} |",
        "",
        f"Spearman correlation of linearity with the loss over the records: "
        f"{r['spearman_linearity_vs_loss']:+.3f}.",
        "",
    ]

    def grid_table(cells: list[dict[str, Any]], title: str) -> list[str]:
        rows = [
            title,
            "",
            "| run | m | d | core_prob | linearity g | linearity f | \\|cos\\| independent "
            "| \\|cos\\| dependent | dependent - independent (seeds > 0) | loss - optimum "
            "| status (lr) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in cells:
            lrs = "/".join(f"{x:g}" for x in c.get("lr", []))
            rows.append(
                f"| {c['role']} | {c['m']} | {c['d']} | {c['core_prob']:.3f} | {_ci(c['lin_g'])} "
                f"| {_ci(c['lin_f'])} | {_ci(c['orth_ind'])} | {_ci(c['orth_dep'])} "
                f"| {_ci(c['orth_gap'])} ({c['orth_gap_positive']}/{c['n_seeds']}) "
                f"| {_ci(c['excess'])} | {'/'.join(c['status'])} ({lrs}) |"
            )
        return [*rows, ""]

    n = summary["methods"][0]["n_seeds"]
    out += grid_table(
        summary["methods"],
        f"**Table 2. The METHODS setting at convergence** (mean over {n} seeds [95% t-interval])",
    )
    n = summary["grid"][0]["n_seeds"]
    out += grid_table(
        summary["grid"],
        f"**Table 3. d << m, with the capacity and support controls** (mean over {n} seeds "
        "[95% t-interval])",
    )
    out += [
        "**Table 4. Fixed context embeddings: gradient descent on G vs the hard-margin G_mm**",
        "",
        "| seed | t | cos(G(t) - G(t/2), G_mm) | \\|G(t) - G(t/2)\\| / \\|G_mm\\| (log 2 = 0.693) "
        "| cos(G(t), G_mm) | \\|cos\\| ind. / dep. in G(t) | in G_mm |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in summary["fixed"]:
        out.append(
            f"| {f['seed']} | {f['steps']} | {f['increment_cosine']:.5f} | "
            f"{f['increment_ratio']:.4f} | {f['direction_cosine']:.4f} | "
            f"{f['orth_independent']:.4f} / {f['orth_dependent']:.4f} | "
            f"{f['mm_orth_independent']:.4f} / {f['mm_orth_dependent']:.4f} |"
        )
    out.append("")
    models = summary["models"]
    if isinstance(models, dict):
        out += [
            "**Table 5. Real models: context directions vs unembedding directions**",
            "",
            "| model | inner product | concepts | matched mean [95% basic bootstrap] | permuted "
            "mean [2.5%, 97.5%] | p | mismatched \\|cos\\| [95%] | matched wins |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, entry in models["models"].items():
            for ip in ("causal", "euclidean"):
                st = entry[ip]
                lo, hi = st["matched_mean_interval"]
                plo, phi = st["permutation_interval"]
                xlo, xhi = st["mismatched_mean_abs_interval"]
                out.append(
                    f"| {name} | {ip} | {st['n_concepts']} | {st['matched_mean']:.3f} "
                    f"[{lo:.3f}, {hi:.3f}] | {st['permutation_mean']:.3f} [{plo:.3f}, {phi:.3f}] "
                    f"| {st['p_value']:.4f} | {st['mismatched_mean_abs']:.3f} [{xlo:.3f}, "
                    f"{xhi:.3f}] | {st['fraction_matched_wins']:.0%} |"
                )
        out.append("")
    else:
        out += [f"Table 5 (real models): {models}.", ""]
    return "\n".join(out)


def write_doc(doc: Path, summary: dict[str, Any]) -> None:
    """Replace the doc's region between the table markers with ``render_tables``."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no table markers: add {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{render_tables(summary)}\n{END}{tail}")


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=110)
    viz.close(fig)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


if __name__ == "__main__":
    sys.exit(main())
