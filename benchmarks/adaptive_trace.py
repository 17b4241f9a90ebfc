"""Adaptive causal tracing against the exact trace, in the same run, over known facts.

For each model and the first N facts of known_1000 it knows (ROME's filter), for each kind:
  exact     mechlin.causal_trace (the replay engine: every cell restored)
  adaptive  mechlin.adaptive_trace (attribution estimate of every cell, the highest-priority
            cells and a random check sample restored exactly)
The two run back to back on each fact, so machine load affects both alike. Printed and written
(--out, JSON and a markdown table):
  * time of each, and the ratio exact / adaptive (sums over facts), per kind, in wall time and
    in process CPU time (the work done; it does not grow when other jobs share the CPU);
  * recall@10: the share of the exact trace's 10 highest cells that are among the adaptive
    result's 10 highest, mean over facts; and a tie-aware recall, counting an adaptive top-10
    cell as found when its exact effect is within 2% of the total effect of the exact 10th
    (the highest cells of a trace are often a plateau of near-equal values);
  * the share of the exact top 10 that the adaptive run restored exactly (found by the screen);
  * the share of cells restored exactly;
  * ROME's AIE-by-bucket figure from the exact and from the adaptive traces, and the share of
    (kind, bucket, layer) points of the adaptive one inside the exact one's 95% band;
  * where the estimate fails: on the random check cells (an unbiased sample), the mean and
    max |estimated - exact| indirect effect, relative to the fact's total effect, by kind, token
    bucket and third of the layers;
  * with --rome-facts K: the ROME loop (one forward per cell) on K facts, for its ratio.

Run: .venv/bin/python benchmarks/adaptive_trace.py [--models smollm2-135m gemma-3-270m]
     [--n-facts 50] [--kinds resid mlp attn] [--budget 0.1] [--device cpu|cuda]
     [--dtype float32|bfloat16] [--rome-facts 1] [--threads 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mechlin
from mechlin import viz
from mechlin.datasets.facts import is_known, load_known_1000, next_token_logits
from mechlin.recall.attribution import adaptive_trace
from mechlin.recall.causal_effects import BUCKETS, _aggregate, bucket_positions
from mechlin.recall.tracing import causal_trace, embedding_std


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _top(scores: torch.Tensor, k: int) -> list[int]:
    return torch.topk(scores.reshape(-1), min(k, scores.numel())).indices.tolist()


def known_facts(model, n: int) -> list:
    facts = load_known_1000()
    out = []
    for start in range(0, len(facts), 64):
        chunk = facts[start : start + 64]
        top1 = next_token_logits(model, [f.prompt for f in chunk]).argmax(-1).tolist()
        out += [f for f, t in zip(chunk, top1, strict=True) if is_known(model, f, t)]
        if len(out) >= n:
            break
    return out[:n]


def third(layer: int, n_layers: int) -> str:
    return ("early", "middle", "late")[min(2, 3 * layer // n_layers)]


def run_model(name: str, args: argparse.Namespace) -> dict:
    dtype = getattr(torch, args.dtype)
    model = mechlin.load_model(name, device=args.device, dtype=dtype)
    embedding_std(model)  # cached once, outside the timings
    facts = known_facts(model, args.n_facts)
    n_layers = int(model.cfg.n_layers)
    kw = dict(n_samples=args.n_samples)
    times = defaultdict(lambda: [0.0, 0.0])
    cpu = defaultdict(lambda: [0.0, 0.0])  # process CPU time: robust to other load
    recall, recall_found, tie_recall, share, spearman = (defaultdict(list) for _ in range(5))
    errors = defaultdict(list)
    exact_records, adaptive_records = [], []
    # warm-up (first calls allocate and compile kernels)
    causal_trace(model, facts[0].prompt, facts[0].subject, layers=[0], **kw)
    for i, fact in enumerate(facts):
        rec_e: dict = {"known": True, "multi": False}
        rec_a: dict = {"known": True, "multi": False}
        for kind in args.kinds:
            _sync(args.device)
            t0, c0 = time.perf_counter(), time.process_time()
            ex = causal_trace(model, fact.prompt, fact.subject, kind=kind, **kw)
            _sync(args.device)
            t1, c1 = time.perf_counter(), time.process_time()
            ad = adaptive_trace(
                model,
                fact.prompt,
                fact.subject,
                kind=kind,
                budget=args.budget,
                check=args.check,
                rounds=args.rounds,
                **kw,
            )
            _sync(args.device)
            t2, c2 = time.perf_counter(), time.process_time()
            times[kind][0] += t1 - t0
            times[kind][1] += t2 - t1
            cpu[kind][0] += c1 - c0
            cpu[kind][1] += c2 - c1
            te = ex.clean_score - ex.corrupt_score
            top_e, top_a = _top(ex.scores, 10), _top(ad.scores, 10)
            recall[kind].append(len(set(top_e) & set(top_a)) / len(top_e))
            found = ad.exact.reshape(-1)
            recall_found[kind].append(sum(bool(found[c]) for c in top_e) / len(top_e))
            flat = ex.scores.reshape(-1)
            cutoff = float(flat[top_e[-1]]) - 0.02 * abs(te)
            tie_recall[kind].append(sum(float(flat[c]) >= cutoff for c in top_a) / len(top_a))
            share[kind].append(ad.n_exact / ad.scores.numel())
            if ad.rank_correlation is not None:
                spearman[kind].append(ad.rank_correlation)
            ie_est = ad.estimate - ad.corrupt_score
            ie_exact = ex.scores - ex.corrupt_score
            buckets = bucket_positions(ex.subject_span, ex.scores.shape[1])
            for r, c in torch.nonzero(ad.checked).tolist():
                err = abs(float(ie_est[r, c] - ie_exact[r, c])) / max(abs(te), 1e-6)
                for b, pos in enumerate(buckets):
                    if c in pos:
                        errors[(kind, BUCKETS[b], third(r, n_layers))].append(err)
            for rec, trace in ((rec_e, ex), (rec_a, ad)):
                rec[kind] = trace.scores
                rec.update(
                    p_clean=trace.clean_score,
                    p_corrupt=trace.corrupt_score,
                    span=list(trace.subject_span),
                )
        exact_records.append(rec_e)
        adaptive_records.append(rec_a)
        done = {k: f"{cpu[k][0] / max(cpu[k][1], 1e-9):.1f}x" for k in args.kinds}
        print(f"{name}: fact {i + 1}/{len(facts)} {fact.subject!r}: speed-ups so far {done}")

    kinds = tuple(args.kinds)
    ace_e = _aggregate(model, facts, exact_records, kinds, "prob", 10)
    ace_a = _aggregate(model, facts, adaptive_records, kinds, "prob", 10)
    inside = ((ace_a.aie - ace_e.aie).abs() <= 1.96 * ace_e.se + 1e-9).float().mean().item()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for tag, ace in (("exact", ace_e), ("adaptive", ace_a)):
        fig = ace.plot()
        fig.savefig(out_dir / f"{name}-aie-{tag}.png", dpi=80)
        viz.close(fig)

    rome = None
    if args.rome_facts:
        from tests.reference.causal_trace_ref import reference_trace

        t_rome = t_ad = 0.0
        for fact in facts[: args.rome_facts]:
            probe = causal_trace(model, fact.prompt, fact.subject, layers=[0], positions=[0], **kw)
            s0, s1 = probe.subject_span
            gen = torch.Generator().manual_seed(0)
            noise = torch.randn(args.n_samples, s1 - s0, model.cfg.d_model, generator=gen)
            noise = (noise * probe.noise_level).to(model.cfg.device)
            t0 = time.process_time()
            reference_trace(
                model,
                fact.prompt,
                fact.subject,
                kind="resid",
                window=10,
                answer_id=probe.answer_id,
                noise=noise,
                corrupted_prompt=None,
                metric="prob",
            )
            t1 = time.process_time()
            adaptive_trace(model, fact.prompt, fact.subject, budget=args.budget, **kw)
            t_rome += t1 - t0
            t_ad += time.process_time() - t1
        rome = {
            "facts": args.rome_facts,
            "rome_s": t_rome,
            "adaptive_s": t_ad,
            "ratio": t_rome / t_ad,
        }

    table = {
        f"{k}|{b}|{t}": {"n": len(v), "mean": statistics.fmean(v), "max": max(v)}
        for (k, b, t), v in sorted(errors.items())
    }
    return {
        "model": name,
        "device": args.device,
        "dtype": args.dtype,
        "n_facts": len(facts),
        "budget": args.budget,
        "check": args.check,
        "rounds": args.rounds,
        "per_kind": {
            k: {
                "exact_s": times[k][0],
                "adaptive_s": times[k][1],
                "speedup": times[k][0] / times[k][1],
                "exact_cpu_s": cpu[k][0],
                "adaptive_cpu_s": cpu[k][1],
                "speedup_cpu": cpu[k][0] / cpu[k][1],
                "recall@10": statistics.fmean(recall[k]),
                "recall@10_min": min(recall[k]),
                "top10_restored_exactly": statistics.fmean(recall_found[k]),
                "tie_aware_recall@10": statistics.fmean(tie_recall[k]),
                "share_exact": statistics.fmean(share[k]),
                "spearman_check_cells": statistics.fmean(spearman[k]) if spearman[k] else None,
            }
            for k in args.kinds
        },
        "aie_points_inside_exact_95pct_band": inside,
        "rome_loop": rome,
        "estimate_error_on_check_cells": table,
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| model | kind | facts | exact s | adaptive s | speed-up (wall) | speed-up (CPU) | "
        "recall@10 | tie-aware | top-10 restored | exact cells | Spearman (check) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for k, v in r["per_kind"].items():
            sp = v["spearman_check_cells"]
            lines.append(
                f"| {r['model']} | {k} | {r['n_facts']} | {v['exact_s']:.1f} | "
                f"{v['adaptive_s']:.1f} | {v['speedup']:.1f}x | {v['speedup_cpu']:.1f}x | "
                f"{v['recall@10']:.2f} | "
                f"{v['tie_aware_recall@10']:.2f} | {v['top10_restored_exactly']:.2f} | "
                f"{v['share_exact']:.1%} | "
                f"{'-' if sp is None else f'{sp:.2f}'} |"
            )
    lines.append("")
    for r in results:
        lines.append(
            f"{r['model']}: AIE points inside the exact 95% band: "
            f"{r['aie_points_inside_exact_95pct_band']:.1%}"
            + (f"; ROME loop / adaptive: {r['rome_loop']['ratio']:.0f}x" if r["rome_loop"] else "")
        )
    lines += [
        "",
        "| model | kind | bucket | layers | n | mean err/TE | max err/TE |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for key, v in r["estimate_error_on_check_cells"].items():
            k, b, t = key.split("|")
            lines.append(
                f"| {r['model']} | {k} | {b} | {t} | {v['n']} | {v['mean']:.3f} | {v['max']:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
    p.add_argument("--n-facts", type=int, default=50)
    p.add_argument("--kinds", nargs="+", default=["resid", "mlp", "attn"])
    p.add_argument("--budget", type=float, default=0.1)
    p.add_argument("--check", type=float, default=0.25)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--n-samples", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--rome-facts", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "adaptive"))
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: both methods' times measure their work, not the idle "
        "spinning of thread pools or other jobs on a shared machine)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    results = [run_model(name, args) for name in args.models]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = markdown(results)
    (out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
