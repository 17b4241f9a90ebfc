"""Adaptive tracing's choices, replayed on saved exact traces: recall against the work done.

``benchmarks/adaptive_trace.py`` saves, per fact and kind, every cell's metric on every noise
sample (the exact trace, before averaging) and each sample's first-order estimates. This script
replays ``adaptive_trace``'s policy (``mechlin.recall.adaptive_policy._run_policy``, the very
code the function runs, with a restorer that looks values up in the saved table instead of
running the model; ``tests/recall/test_adaptive.py`` checks the replay reproduces
``adaptive_trace``) for a grid of settings, and reports for each, per model and kind, mean over
facts:

  recall@10   share of the exact trace's 10 highest cells among the result's 10 highest
  found       share of them restored exactly
  work        share of the exact trace's (cell, noise sample) restorations done
  cost        the same, each restoration weighted by the layers x positions the replay engine
              runs for it (a restoration at layer l, position t reruns layers l.. at t..)

No model runs here, so a grid of settings takes seconds; wall-time speed-ups are measured only
by ``benchmarks/adaptive_trace.py`` (for its settings).

Run: .venv/bin/python benchmarks/adaptive_policies.py [--data benchmarks/out/adaptive ...]
     [--screens 0 0.2 0.3 0.4] [--screen-samples 1 2 3] [--budgets 0.1]
     [--linearize metric logprob] [--refine kind none 0.5:1.0 0.7:2.0,0.35:0.7]
     [--strides kind 1 3] [--max-exact kind 0 24]

``kind`` (--screens, --screen-samples, --refine, --strides, --max-exact) replays
adaptive_trace's default for each kind (``SCREEN_DEFAULTS``).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mechlin.cli import parse_refine
from mechlin.recall.adaptive_policy import (
    _Plan,
    _plan_scores,
    _run_policy,
    _TableRestorer,
    default_linearize,
    screen_for,
)
from mechlin.recall.attribution import combine_rows
from mechlin.recall.tracing import window_layers


def _top(scores: torch.Tensor, k: int = 10) -> set[int]:
    return set(torch.topk(scores.reshape(-1), min(k, scores.numel())).indices.tolist())


def _costs(kind: str, n_layers: int, n_pos: int, window: int = 10) -> torch.Tensor:
    """Layers x positions the replay engine reruns for one restoration of each cell."""
    join = [
        layer + 1 if kind == "resid" else window_layers(layer, window, n_layers).start
        for layer in range(n_layers)
    ]
    layers_run = torch.tensor([n_layers - j + 0.5 for j in join])  # + the readout
    positions_run = torch.arange(n_pos, 0, -1, dtype=torch.float)
    return layers_run[:, None] * positions_run[None, :]


def replay_scores(
    rec: dict,
    *,
    budget,
    check,
    screen,
    screen_samples,
    linearize,
    refine=(),
    stride=1,
    max_exact=0,
    seed=0,
) -> tuple[torch.Tensor, _Plan, _TableRestorer]:
    """adaptive_trace's scores of one saved (fact, kind) for these settings (metric "prob")."""
    table, corrupt_rows = rec["table"], rec["corrupt_rows"]
    corrupt_score = float(rec["p_corrupt"])
    n_rows = table.shape[2]
    screen_rows = tuple(range(screen_samples)) if screen and screen_samples < n_rows else ()
    linearize = linearize or default_linearize("prob", screen_rows)  # None: adaptive_trace's
    per_row = rec["rows_logprob" if linearize == "logprob" else "rows_metric"]
    ie = combine_rows(per_row, corrupt_rows, linearize, "prob")
    restorer = _TableRestorer(table, corrupt_rows, corrupt_score)
    plan = _run_policy(
        ie,
        rec["moved"],
        restorer,
        budget=budget,
        check=check,
        screen=screen,
        screen_rows=screen_rows,
        rounds=1,
        stop_below=None,
        total_effect=1.0,
        seed=seed,
        refine=refine,
        stride=stride,
        max_exact=max_exact,
    )
    return _plan_scores(ie, plan, restorer), plan, restorer


def replay(rec: dict, **settings) -> dict:
    scores, plan, restorer = replay_scores(rec, **settings)
    table = rec["table"]
    n_rows = table.shape[2]
    exact = table.mean(-1)
    top = _top(exact)
    done = ~torch.isnan(restorer.values)  # (cell, cell column, noise sample) restored
    cost = _costs(rec["kind"], *exact.shape)
    exact_cells = {r * exact.shape[1] + c for r, c in plan.exact}
    return {
        "recall": len(top & _top(scores)) / len(top),
        "found": len(top & exact_cells) / len(top),
        "work": float(done.float().mean()),
        "cost": float((done.float().sum(-1) * cost).sum() / (cost.sum() * n_rows)),
    }


def load(data: Path) -> dict[str, list[dict]]:
    """model -> records (one per fact and kind) saved by benchmarks/adaptive_trace.py."""
    out: dict[str, list[dict]] = {}
    for model_dir in sorted((data / "facts").iterdir()):
        for path in sorted(model_dir.glob("[0-9]*.pt")):
            fact = torch.load(path, weights_only=False)
            for kind, rec in fact["kinds"].items():
                if "table" in rec:
                    out.setdefault(model_dir.name, []).append(dict(rec, kind=kind))
    return out


def _or_kind(parse):
    """An argument's parser that also takes 'kind': adaptive_trace's default by kind."""
    return lambda text: None if text == "kind" else parse(text)


def _stages_text(stages: tuple[tuple[float, float], ...]) -> str:
    return ",".join(f"{b:g}:{a:g}" for b, a in stages) or "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data",
        nargs="+",
        default=[str(ROOT / "benchmarks" / "out" / "adaptive")],
        help="output directories of adaptive_trace.py (several: their facts together)",
    )
    p.add_argument("--screens", nargs="+", type=_or_kind(float), default=[0, 0.2, 0.3, 0.4])
    p.add_argument("--screen-samples", nargs="+", type=_or_kind(int), default=[1, 2, 3])
    p.add_argument("--strides", nargs="+", type=_or_kind(int), default=[None])
    p.add_argument("--budgets", nargs="+", type=float, default=[0.1])
    p.add_argument(
        "--max-exact",
        nargs="+",
        type=_or_kind(int),
        default=[None],
        help="caps on the cells restored exactly: 'kind' (adaptive_trace's default for the "
        "kind, SCREEN_DEFAULTS) or a number (0: no cap)",
    )
    p.add_argument("--check", type=float, default=0.25)
    p.add_argument("--linearize", nargs="+", default=["metric", "logprob"])
    p.add_argument(
        "--refine",
        nargs="+",
        type=_or_kind(parse_refine),
        default=[None],
        help="refinement settings to try: 'kind' (adaptive_trace's default for the kind, "
        "SCREEN_DEFAULTS), 'none', or stages below:above separated by commas (adaptive_trace's "
        "refine), e.g. none 0.5:1.0 0.7:2.0,0.35:0.7",
    )
    args = p.parse_args()
    records: dict[str, list[dict]] = {}
    for data in args.data:
        for model, recs in load(Path(data)).items():
            records.setdefault(model, []).extend(recs)
    if not records:
        raise SystemExit(f"no saved traces under {args.data}: run adaptive_trace.py first")
    print(
        "| model | kind | facts | budget | max exact | linearize | screen | screen samples | "
        "refine | stride | recall@10 | found | work | cost |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model, recs in records.items():
        kinds = sorted({r["kind"] for r in recs}, key=["resid", "mlp", "attn"].index)
        for kind in kinds:
            mine = [r for r in recs if r["kind"] == kind]
            grid = itertools.product(
                args.budgets,
                args.linearize,
                args.screens,
                args.screen_samples,
                args.refine,
                args.strides,
                args.max_exact,
            )
            for budget, linearize, screen, m_given, refine, stride, cap in grid:
                if not screen and m_given != args.screen_samples[0]:
                    continue  # no screen: the number of its samples does not matter
                screen, m, refine, stride, cap = screen_for(
                    kind, screen, m_given, refine, stride, cap
                )
                got = [
                    replay(
                        r,
                        budget=budget,
                        check=args.check,
                        screen=screen,
                        screen_samples=m,
                        linearize=linearize,
                        refine=refine,
                        stride=stride,
                        max_exact=cap,
                        seed=0,  # adaptive_trace's default: the same random sample
                    )
                    for r in mine
                ]
                mean = {k: statistics.fmean(g[k] for g in got) for k in got[0]}
                print(
                    f"| {model} | {kind} | {len(mine)} | {budget:g} | {cap or '-'} | {linearize} | "
                    f"{screen:g} | "
                    f"{m if screen else '-'} | {_stages_text(refine)} | {stride} | "
                    f"{mean['recall']:.2f} | "
                    f"{mean['found']:.2f} | "
                    f"{mean['work']:.1%} | {mean['cost']:.1%} |"
                )


if __name__ == "__main__":
    main()
