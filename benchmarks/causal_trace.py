"""Causal tracing speed: mechlin against the ROME-style loop and TransformerLens patching, one run.

On the same model and prompt, each method runs in its own process (so peak memory is its own):
  mechlin       mechlin.causal_trace (layer replay: reruns only what a restoration can change)
  rome          the ROME loop: one forward of batch 1 + n_samples per (layer, token) cell
                (tests/reference/causal_trace_ref.py, the equivalence tests' reference)
  tl_patching   TransformerLens generic_activation_patch over (layer, pos) of resid_post: one
                forward per cell; it takes corrupted tokens, so it runs in corrupted-prompt mode
The script prints times, speed-up ratios, the max abs difference of the scores, peak memory,
and the speed-up a perfect implementation could reach by counting multiply-adds (rows x layers
x positions that a restoration can change, logits at the last position only).

Run: .venv/bin/python benchmarks/causal_trace.py [--model smollm2-135m] [--kind resid]
     [--device cpu|cuda] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
CORRUPTED = "The Space Needle is located in the city of"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import mechlin
    from mechlin.recall.tracing import causal_trace
    from tests.reference.causal_trace_ref import reference_trace

    model = mechlin.load_model(args.model, device=args.device)
    cuda = args.device == "cuda"
    corrupted = CORRUPTED if args.mode == "prompt" else None
    # The noise and answer every method shares (mechlin's own draw, seed 0).
    probe = causal_trace(
        model,
        PROMPT,
        SUBJECT,
        kind=args.kind,
        corrupted_prompt=corrupted,
        layers=[0],
        positions=[0],
    )
    s0, s1 = probe.subject_span
    noise = None
    if corrupted is None:
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(10, s1 - s0, model.cfg.d_model, generator=gen) * probe.noise_level
        noise = noise.to(model.cfg.device)

    def run() -> torch.Tensor:
        if args.method == "mechlin":
            return causal_trace(
                model, PROMPT, SUBJECT, kind=args.kind, corrupted_prompt=corrupted
            ).scores
        if args.method == "rome":
            return reference_trace(
                model,
                PROMPT,
                SUBJECT,
                kind=args.kind,
                window=10,
                answer_id=probe.answer_id,
                noise=noise,
                corrupted_prompt=corrupted,
                metric="prob",
            )[0]
        from transformer_lens.patching import generic_activation_patch, layer_pos_patch_setter

        clean = model.to_tokens(PROMPT)
        _, clean_cache = model.run_with_cache(clean)
        site = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}[args.kind]
        return generic_activation_patch(
            model,
            model.to_tokens(CORRUPTED),
            clean_cache,
            lambda logits: logits[0, -1].softmax(-1)[probe.answer_id],
            layer_pos_patch_setter,
            site,
            index_axis_names=("layer", "pos"),
        ).reshape(model.cfg.n_layers, -1)

    with torch.no_grad():
        # Peak memory above the loaded model (RSS high-water mark on CPU, so the warm-up's
        # peak counts too: it is the same computation).
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated() if cuda else _rss_mb()
        run()  # warm-up
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            scores = run()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() - base_mem) / 2**20 if cuda else _rss_mb() - base_mem
    torch.save(scores.float().cpu(), args.out)
    print(json.dumps({"time_s": statistics.median(times), "peak_extra_mb": peak}))


def mac_bound(model_name: str, kind: str) -> tuple[float, float]:
    """Multiply-adds of the ROME loop and of a perfect implementation (noise mode, 10 samples)."""
    sys.path.insert(0, str(ROOT))
    import mechlin
    from mechlin.recall.tracing import window_layers

    model = mechlin.load_model(model_name, device="cpu")
    c = model.cfg
    n_pos = model.to_tokens(PROMPT).shape[1]
    n_layers, rows = c.n_layers, 10
    kv = (getattr(c, "n_key_value_heads", None) or c.n_heads) * c.d_head
    proj = 2 * c.d_model * c.n_heads * c.d_head + 2 * c.d_model * kv + 3 * c.d_model * c.d_mlp

    def layer_pos(ctx: int) -> float:  # one layer at one position attending to ctx positions
        return proj + 2 * c.n_heads * c.d_head * ctx

    full_pass = sum(layer_pos(p + 1) for p in range(n_pos)) * n_layers
    unembed = c.d_model * c.d_vocab
    rome = minimal = 0.0
    for layer in range(n_layers):
        first = layer + 1 if kind == "resid" else window_layers(layer, 10, n_layers).start
        for t in range(n_pos):
            rome += (rows + 1) * (full_pass + n_pos * unembed)
            tail = sum(layer_pos(p + 1) for p in range(t, n_pos)) * (n_layers - first)
            minimal += rows * (tail + unembed)
    return rome, minimal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--kind", default="resid", choices=["resid", "mlp", "attn"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    tmp = Path(tempfile.mkdtemp())
    results: dict[str, dict] = {}
    runs = [("mechlin", "noise"), ("rome", "noise"), ("mechlin", "prompt"), ("rome", "prompt")]
    if args.kind in ("resid", "mlp", "attn"):
        runs.append(("tl_patching", "prompt"))
    for method, mode in runs:
        out = tmp / f"{method}-{mode}.pt"
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--method",
            method,
            "--mode",
            mode,
            "--model",
            args.model,
            "--kind",
            args.kind,
            "--device",
            args.device,
            "--repeat",
            str(args.repeat),
            "--out",
            str(out),
        ]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[f"{method}/{mode}"] = {**json.loads(line.strip().splitlines()[-1]), "scores": out}
        r = results[f"{method}/{mode}"]
        print(f"{method:12s} {mode:6s} {r['time_s']:8.2f} s   peak +{r['peak_extra_mb']:.0f} MB")

    def diff(a: str, b: str) -> float:
        return float(
            (torch.load(results[a]["scores"]) - torch.load(results[b]["scores"])).abs().max()
        )

    def ratio(a: str, b: str) -> float:
        return results[b]["time_s"] / results[a]["time_s"]

    rome_macs, minimal_macs = mac_bound(args.model, args.kind)
    summary = {
        "model": args.model,
        "kind": args.kind,
        "device": args.device,
        "speedup_vs_rome_noise": ratio("mechlin/noise", "rome/noise"),
        "maxdiff_vs_rome_noise": diff("mechlin/noise", "rome/noise"),
        "speedup_vs_rome_prompt": ratio("mechlin/prompt", "rome/prompt"),
        "maxdiff_vs_rome_prompt": diff("mechlin/prompt", "rome/prompt"),
        "speedup_vs_tl_patching": ratio("mechlin/prompt", "tl_patching/prompt"),
        # TL's metric reads one corrupted row, as mechlin's prompt mode does
        "maxdiff_vs_tl_patching": diff("mechlin/prompt", "tl_patching/prompt"),
        "mac_bound_speedup_vs_rome": rome_macs / minimal_macs,
    }
    print(
        f"\nmechlin vs ROME loop (noise, 10 samples): {summary['speedup_vs_rome_noise']:.1f}x "
        f"(max |diff| {summary['maxdiff_vs_rome_noise']:.1e}); multiply-add bound "
        f"{summary['mac_bound_speedup_vs_rome']:.1f}x\n"
        f"mechlin vs ROME loop (corrupted prompt): {summary['speedup_vs_rome_prompt']:.1f}x "
        f"(max |diff| {summary['maxdiff_vs_rome_prompt']:.1e})\n"
        f"mechlin vs TransformerLens patching (corrupted prompt): "
        f"{summary['speedup_vs_tl_patching']:.1f}x (max |diff| "
        f"{summary['maxdiff_vs_tl_patching']:.1e})"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
