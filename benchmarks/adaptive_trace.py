"""Adaptive causal tracing against the exact trace, in the same run, over known facts.

For each model and the first N facts of known_1000 it knows (ROME's filter), for each kind:
  exact     mechlin.causal_trace's computation (the replay engine: every cell restored; each
            noise sample's score is kept for benchmarks/adaptive_policies.py)
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
    (kind, bucket, layer) points of the adaptive one inside the exact one's 95% band (and
    inside it or within 1% of the ATE); the same for the sweep's defaults
    (average_causal_effects(method="adaptive") screens every reachable cell), replayed on the
    saved exact tables, and for an exact trace of the first 2 noise samples only;
  * where the estimate fails: on the random check cells (an unbiased sample), the mean and
    max |estimated - exact| indirect effect, relative to the fact's total effect, by kind, token
    bucket and third of the layers;
  * with --rome-facts K: the ROME loop (one forward per cell) on K facts, for its ratio.

Each fact's traces are saved under --out/facts/<model>/ as they are done: a rerun with the same
settings resumes, and --summarize-only reports on the facts saved so far (an interrupted run).

Run: .venv/bin/python benchmarks/adaptive_trace.py [--models smollm2-135m gemma-3-270m]
     [--n-facts 50] [--skip-facts 0] [--kinds resid mlp attn] [--budget 0.1] [--screen 0.3]
     [--screen-samples N] [--screen-stride N] [--max-exact N]
     [--linearize metric|logprob] [--refine 0.5:1.0] [--device cpu|cuda]
     [--dtype float32|bfloat16]
     [--rome-facts 1] [--threads 1] [--out DIR] [--summarize-only]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mechlin
from mechlin import viz
from mechlin.cli import parse_refine
from mechlin.datasets.facts import is_known, load_known_1000, next_token_logits
from mechlin.recall.adaptive import adaptive_trace
from mechlin.recall.attribution import row_estimates
from mechlin.recall.causal_effects import BUCKETS, SWEEP_DEFAULTS, _aggregate, bucket_positions
from mechlin.recall.tracing import causal_trace, embedding_std, prepare_trace

sys.path.insert(0, str(ROOT / "benchmarks"))
from adaptive_policies import replay_scores


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


def trace_fact(model, fact, args) -> dict:
    """Exact and adaptive traces of one fact, every kind, back to back, with their times."""
    kw = dict(n_samples=args.n_samples)
    options = dict(
        budget=args.budget,
        check=args.check,
        rounds=args.rounds,
        screen=args.screen,
        screen_samples=args.screen_samples,
        screen_stride=args.screen_stride,
        refine=args.refine,
        max_exact=args.max_exact,
        linearize=args.linearize,
    )
    out: dict = {"subject": fact.subject, "prompt": fact.prompt, "kinds": {}}
    for kind in args.kinds:
        _sync(args.device)
        t0, c0 = time.perf_counter(), time.process_time()
        # causal_trace's own computation (prepare, then every cell's score averaged over the
        # noise samples), keeping the per-sample scores for benchmarks/adaptive_policies.py
        prep = prepare_trace(
            model, fact.prompt, fact.subject, kind=kind, answer=None, window=10,
            noise="3sigma", seed=0, corrupted_prompt=None, metric="prob", positions=None,
            layers=None, contrast=None, method="auto", **kw,
        )  # fmt: skip
        table = prep.engine.row_scores(
            prep.setup, prep.site, prep.cells, prep.positions, prep.clean_states, "prob", 1 << 30
        )
        ex = prep.result(table.mean(-1))
        _sync(args.device)
        t1, c1 = time.perf_counter(), time.process_time()
        ad = adaptive_trace(model, fact.prompt, fact.subject, kind=kind, **options, **kw)
        _sync(args.device)
        t2, c2 = time.perf_counter(), time.process_time()
        rows_metric, moved = row_estimates(prep, "metric")  # (outside the timings)
        rows_logprob, _ = row_estimates(prep, "logprob")
        out["kinds"][kind] = {
            "table": table,
            "corrupt_rows": prep.corrupt_rows,
            "rows_metric": rows_metric,
            "rows_logprob": rows_logprob,
            "moved": moved,
            "exact": ex.scores,
            "adaptive": ad.scores,
            "estimate": ad.estimate,
            "is_exact": ad.exact,
            "checked": ad.checked,
            "screened": ad.screened,
            "work": ad.work,
            "rank_correlation": ad.rank_correlation,
            "p_clean": ex.clean_score,
            "p_corrupt": ex.corrupt_score,
            "span": list(ex.subject_span),
            "exact_s": t1 - t0,
            "adaptive_s": t2 - t1,
            "exact_cpu_s": c1 - c0,
            "adaptive_cpu_s": c2 - c1,
        }
    return out


def run_model(name: str, args: argparse.Namespace) -> dict:
    dtype = getattr(torch, args.dtype)
    model = mechlin.load_model(name, device=args.device, dtype=dtype)
    embedding_std(model)  # cached once, outside the timings
    facts = known_facts(model, args.skip_facts + args.n_facts)[args.skip_facts :]
    n_layers = int(model.cfg.n_layers)
    # Each fact's record is saved as it is done; a rerun with the same settings resumes.
    settings = {
        k: getattr(args, k)
        for k in ("n_samples", "device", "dtype", "budget", "check", "rounds", "screen",
                  "screen_samples", "linearize", "threads")
    }  # fmt: skip
    if args.screen is None:
        settings["screen"] = "by kind"  # adaptive_trace's SCREEN_DEFAULTS
    settings["screen_stride"] = args.screen_stride or "by kind"
    if args.max_exact != 0:  # (settings of runs before the cap stay as they were)
        settings["max_exact"] = "by kind" if args.max_exact is None else args.max_exact
    if args.refine is None:
        settings["refine"] = "by kind"
    elif args.refine:  # (settings of runs without it stay as they were)
        settings["refine"] = [list(stage) for stage in args.refine]
    if args.skip_facts:
        settings["skip_facts"] = args.skip_facts
    # A share budget rounds down to whole cells (before, up: gemma-3's 18-layer grids restored
    # 10.2-10.3%); stores from before do not resume (--summarize-only still reads them).
    settings["budget_cells"] = "rounded down"
    store = Path(args.out) / "facts" / name
    store.mkdir(parents=True, exist_ok=True)
    saved = store / "settings.json"
    # Runs from before the stride screened every layer (and recorded screen 0.3): they resume
    # with --screen 0.3 --screen-stride 1.
    if not saved.exists() or {"screen_stride": 1} | json.loads(saved.read_text()) == settings:
        saved.write_text(json.dumps(settings))
    elif args.summarize_only:  # reports on what is saved, traces nothing
        print(f"{store}: facts traced with other settings: {saved.read_text()}")
    else:
        raise SystemExit(
            f"{store} holds facts traced with other settings ({saved.read_text()}); "
            "pass another --out or delete it"
        )
    # warm-up (first calls allocate and compile kernels)
    causal_trace(model, facts[0].prompt, facts[0].subject, layers=[0], n_samples=args.n_samples)
    records = []
    for i, fact in enumerate(facts):
        path = store / f"{i:03d}.pt"
        rec = torch.load(path, weights_only=False) if path.exists() else None
        if rec is None or rec["subject"] != fact.subject or set(rec["kinds"]) < set(args.kinds):
            if args.summarize_only:
                facts = facts[:i]
                break
            rec = trace_fact(model, fact, args)
            torch.save(rec, path)
        records.append(rec)
        done = {}
        for k in args.kinds:
            e = sum(r["kinds"][k]["exact_cpu_s"] for r in records)
            a = sum(r["kinds"][k]["adaptive_cpu_s"] for r in records)
            done[k] = f"{e / a:.1f}x"
        print(f"{name}: fact {i + 1}/{len(facts)} {fact.subject!r}: speed-ups so far {done}")
    if not records:  # --summarize-only on a directory without this run's first fact
        raise SystemExit(f"{store} holds no traced fact of these settings to summarize")
    return summarize(name, model, facts, records, n_layers, args)


def summarize(name, model, facts, records, n_layers, args) -> dict:
    per_kind = {}
    errors = defaultdict(list)
    for kind in args.kinds:
        rows = [r["kinds"][kind] for r in records]
        recall, found, tie, share, work, spearman = [], [], [], [], [], []
        for k in rows:
            ex, ad = k["exact"], k["adaptive"]
            te = k["p_clean"] - k["p_corrupt"]
            top_e, top_a = _top(ex, 10), _top(ad, 10)
            recall.append(len(set(top_e) & set(top_a)) / len(top_e))
            flat_exact = k["is_exact"].reshape(-1)
            found.append(sum(bool(flat_exact[c]) for c in top_e) / len(top_e))
            flat = ex.reshape(-1)
            cutoff = float(flat[top_e[-1]]) - 0.02 * abs(te)
            tie.append(sum(float(flat[c]) >= cutoff for c in top_a) / len(top_a))
            share.append(float(k["is_exact"].float().mean()))
            work.append(k["work"])
            if k["rank_correlation"] is not None:
                spearman.append(k["rank_correlation"])
            ie_est = k["estimate"] - k["p_corrupt"]
            ie_exact = ex - k["p_corrupt"]
            buckets = bucket_positions(tuple(k["span"]), ex.shape[1])
            for r, c in torch.nonzero(k["checked"]).tolist():
                err = abs(float(ie_est[r, c] - ie_exact[r, c])) / max(abs(te), 1e-6)
                for b, pos in enumerate(buckets):
                    if c in pos:
                        errors[(kind, BUCKETS[b], third(r, n_layers))].append(err)
        t = {f: sum(k[f] for k in rows) for f in ("exact_s", "adaptive_s", "exact_cpu_s",
                                                  "adaptive_cpu_s")}  # fmt: skip
        per_kind[kind] = {
            **t,
            "speedup": t["exact_s"] / t["adaptive_s"],
            "speedup_cpu": t["exact_cpu_s"] / t["adaptive_cpu_s"],
            "recall@10": statistics.fmean(recall),
            "recall@10_min": min(recall),
            "top10_restored_exactly": statistics.fmean(found),
            "tie_aware_recall@10": statistics.fmean(tie),
            "share_exact": statistics.fmean(share),
            "work": statistics.fmean(work),
            "spearman_check_cells": statistics.fmean(spearman) if spearman else None,
        }

    kinds = tuple(args.kinds)

    def as_records(field: str | Callable[[dict], torch.Tensor]) -> list[dict]:
        get = field if callable(field) else (lambda k: k[field])
        return [
            {"known": True, "multi": False,
             **{kind: get(r["kinds"][kind]) for kind in kinds},
             "p_clean": r["kinds"][kinds[0]]["p_clean"],
             "p_corrupt": r["kinds"][kinds[0]]["p_corrupt"],
             "span": r["kinds"][kinds[0]]["span"]}
            for r in records
        ]  # fmt: skip

    ace_e = _aggregate(model, facts, as_records("exact"), kinds, "prob", 10)

    def inside(field) -> tuple[dict, object]:
        """Share of (kind, bucket, layer) points inside the exact figure's 95% band; and
        inside it or within 1% of the ATE of the exact point (the figure's resolution: a
        point whose exact AIE is ~0 has a band of ~0 width)."""
        ace = _aggregate(model, facts, as_records(field), kinds, "prob", 10)
        diff = (ace.aie - ace_e.aie).abs()
        band = 1.96 * ace_e.se + 1e-9
        floor = torch.maximum(band, torch.tensor(0.01 * abs(ace_e.ate)))
        return {
            "strict": (diff <= band).float().mean().item(),
            "within_1pct_ate": (diff <= floor).float().mean().item(),
            "max_diff_over_ate": (diff.max() / abs(ace_e.ate)).item(),
        }, ace

    # The sweep (average_causal_effects(method="adaptive")) screens every reachable cell by
    # default: its scores are replayed on the saved exact tables (the policy's own code); and,
    # for reference, an exact trace of the first 2 noise samples only.
    sweep = dict(
        budget=args.budget,
        check=args.check,
        screen=SWEEP_DEFAULTS["screen"],
        screen_samples=args.screen_samples or SWEEP_DEFAULTS["screen_samples"],
        refine=SWEEP_DEFAULTS["refine"],
        stride=SWEEP_DEFAULTS["screen_stride"],
        linearize=args.linearize,  # None: adaptive_trace's own choice
    )
    sweep_work: list[float] = []

    def sweep_scores(k: dict) -> torch.Tensor:
        scores, _, restorer = replay_scores(k, **sweep)
        sweep_work.append(float((~torch.isnan(restorer.values)).float().mean()))
        return scores

    def two_samples(k: dict) -> torch.Tensor:
        return k["table"][..., :2].mean(-1) - k["corrupt_rows"][:2].mean() + k["p_corrupt"]

    (trace_band, ace_a), (sweep_band, _) = inside("adaptive"), inside(sweep_scores)
    band = {
        "the run's adaptive traces": trace_band,
        "sweep defaults": dict(sweep_band, work=statistics.fmean(sweep_work)),
        "exact, 2 noise samples": inside(two_samples)[0],
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for tag, ace in (("exact", ace_e), ("adaptive", ace_a)):
        fig = ace.plot()
        fig.savefig(out_dir / f"{name}-aie-{tag}.png", dpi=80)
        viz.close(fig)

    rome = None
    if args.rome_facts:
        from tests.reference.causal_trace_ref import reference_trace

        kw = dict(n_samples=args.n_samples)
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
        "n_facts": len(records),
        "budget": args.budget,
        "check": args.check,
        "rounds": args.rounds,
        "screen": args.screen,
        "screen_samples": args.screen_samples,
        "screen_stride": args.screen_stride,
        "refine": args.refine,
        "max_exact": args.max_exact,
        "linearize": args.linearize,
        "per_kind": per_kind,
        "aie_points_inside_exact_95pct_band": band["the run's adaptive traces"]["strict"],
        "aie_band": band,
        "rome_loop": rome,
        "estimate_error_on_check_cells": table,
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| model | kind | facts | exact s | adaptive s | speed-up (wall) | speed-up (CPU) | "
        "recall@10 | tie-aware | top-10 restored | exact cells | work | Spearman (check) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for k, v in r["per_kind"].items():
            sp = v["spearman_check_cells"]
            lines.append(
                f"| {r['model']} | {k} | {r['n_facts']} | {v['exact_s']:.1f} | "
                f"{v['adaptive_s']:.1f} | {v['speedup']:.1f}x | {v['speedup_cpu']:.1f}x | "
                f"{v['recall@10']:.2f} | "
                f"{v['tie_aware_recall@10']:.2f} | {v['top10_restored_exactly']:.2f} | "
                f"{v['share_exact']:.1%} | {v['work']:.1%} | "
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
        "| model | AIE figure from | inside the exact 95% band | inside it or within 1% of ATE "
        "| max diff / ATE | work |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, v in r["aie_band"].items():
            work = f"{v['work']:.1%}" if "work" in v else "-"
            lines.append(
                f"| {r['model']} | {name} | {v['strict']:.1%} | {v['within_1pct_ate']:.1%} | "
                f"{v['max_diff_over_ate']:.3f} | {work} |"
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
    p.add_argument(
        "--skip-facts",
        type=int,
        default=0,
        help="skip the first K known facts (held-out facts for settings chosen on the first ones)",
    )
    p.add_argument("--kinds", nargs="+", default=["resid", "mlp", "attn"])
    p.add_argument("--budget", type=float, default=0.1)
    p.add_argument("--check", type=float, default=0.25)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--screen",
        type=float,
        help="share of the cells screened (default: adaptive_trace's by kind, SCREEN_DEFAULTS)",
    )
    p.add_argument(
        "--screen-stride",
        type=int,
        help="screen one layer in N (default: adaptive_trace's by kind, SCREEN_DEFAULTS)",
    )
    p.add_argument(
        "--screen-samples",
        type=int,
        help="noise samples of the screen (default: adaptive_trace's by kind, SCREEN_DEFAULTS)",
    )
    p.add_argument(
        "--max-exact",
        type=int,
        help="cap on the cells restored exactly, 0 for none (default: adaptive_trace's by "
        "kind, SCREEN_DEFAULTS; 0: the runs before the cap)",
    )
    p.add_argument("--linearize", default=None, choices=["metric", "logprob"])
    p.add_argument(
        "--refine",
        type=parse_refine,
        help="adaptive_trace's refine: stages below:above separated by commas (default: "
        "adaptive_trace's by kind, SCREEN_DEFAULTS), or 'none' (the runs of the README's first "
        "table)",
    )
    p.add_argument("--n-samples", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--rome-facts", type=int, default=1)
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="trace nothing: summarize the facts already saved under --out (a partial run)",
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "adaptive"))
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
