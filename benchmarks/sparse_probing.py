"""Sparse probing cost: activation collection against a plain forward, k sweep against sklearn.

1. Collection. The same Europarl texts in the same batches (sorted by length, right-padded):
     forward    ``model(tokens)``: the plain forward pass (logits included)
     collect    ``collect_activations``: every layer's MLP neurons, mean pooling
     blocks     the Hugging Face decoder stack alone (no unembedding, no hooks)
   Each runs in its own subprocess (so peak memory is its own); the script prints tokens/s of
   each, the overhead ratios collect/forward (goal <= 1.3x) and collect/blocks (collection stops
   after the last hooked layer, so it skips the unembedding the plain forward pays for), and
   each one's peak RSS above the loaded model.
2. k sweep. On one layer's activations (French vs the rest), the full k grid
   (1..256, mean-difference selection, balanced L2 logistic C = 1):
     mechlin    ``probe_sweep``
     sklearn    ``LogisticRegression(C=1, class_weight="balanced")`` fitted per k on the same
                selected neurons and split
   and prints both times, the ratio and the largest F1 difference.

Run: .venv/bin/python benchmarks/sparse_probing.py [--model smollm2-135m] [--n-per-language 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import mechlin
    from mechlin.datasets.features import language_identity
    from mechlin.neurons.activations import collect_activations

    model = mechlin.load_model(args.model, device=args.device)
    texts = list(language_identity(n_per_language=args.n_per_language).texts)
    rows = [model.to_tokens(t)[0] for t in texts]
    order = sorted(range(len(rows)), key=lambda i: rows[i].shape[0])
    batches = []
    for s in range(0, len(order), args.batch_size):
        idx = order[s : s + args.batch_size]
        width = max(rows[i].shape[0] for i in idx)
        tok = torch.zeros(len(idx), width, dtype=torch.long)
        for b, i in enumerate(idx):
            tok[b, : rows[i].shape[0]] = rows[i]
        batches.append(tok.to(args.device))
    n_tokens = sum(r.shape[0] for r in rows)

    def forward() -> None:
        with torch.no_grad():
            for tok in batches:
                model(tok)

    def blocks() -> None:  # the HF decoder stack alone: no unembedding, no hooks
        with torch.no_grad():
            for tok in batches:
                model.original_model.model(input_ids=tok)

    def collect() -> None:
        collect_activations(model, texts, batch_size=args.batch_size, progress=False)

    fn = {"forward": forward, "blocks": blocks, "collect": collect}[args.worker]
    # warm-up on a few batches, then measure peak memory from here
    with torch.no_grad():
        model(batches[0])
    base = _rss_mb()
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        fn()
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    print(
        json.dumps(
            dict(
                seconds=min(times),
                tokens=n_tokens,
                peak_above_model_mb=_peak_rss_mb() - base,
                gpu_peak_mb=(torch.cuda.max_memory_allocated() / 2**20)
                if args.device == "cuda"
                else None,
            )
        )
    )


def sweep_benchmark(args: argparse.Namespace) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    import warnings

    from sklearn.linear_model import LogisticRegression

    import mechlin
    from mechlin.datasets.features import language_identity
    from mechlin.neurons.activations import collect_activations
    from mechlin.neurons.probing import (
        binary_labels,
        neuron_scores,
        probe_sweep,
        split_indices,
    )

    model = mechlin.load_model(args.model, device=args.device)
    ds = language_identity(n_per_language=args.n_per_language)
    layer = model.cfg.n_layers // 2
    acts = collect_activations(model, ds, hooks=[f"blocks.{layer}.mlp.hook_post"], progress=False)[
        layer
    ]
    positive = ds.classes.index("fr")
    t = time.perf_counter()
    sweep = probe_sweep(acts, ds.labels, positive=positive)
    t_mechlin = time.perf_counter() - t

    t = time.perf_counter()
    X = acts.double()
    y, _ = binary_labels(ds.labels, positive)
    train, test = split_indices(y)
    ranking = torch.argsort(
        neuron_scores(X[train], y[train], "mean_diff"), descending=True, stable=True
    )
    f1s = []
    from sklearn.metrics import f1_score

    for k in sweep.ks:
        cols = ranking[:k]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
            clf.fit(X[train][:, cols].numpy(), y[train].numpy())
        f1s.append(f1_score(y[test].numpy(), clf.predict(X[test][:, cols].numpy())))
    t_sklearn = time.perf_counter() - t
    diff = max(abs(a - b) for a, b in zip(sweep.f1[0].tolist(), f1s, strict=True))
    return dict(
        ks=sweep.ks,
        mechlin_s=t_mechlin,
        sklearn_s=t_sklearn,
        max_f1_diff=diff,
        n_rows=X.shape[0],
        n_neurons=X.shape[1],
        layer=layer,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n-per-language", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--worker", choices=["forward", "blocks", "collect"], default=None)
    parser.add_argument("--only", choices=["collection", "sweep"], default=None)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.only != "sweep":
        collection_benchmark(args)
    if args.only != "collection":
        s = sweep_benchmark(args)
        print(
            f"k sweep ({len(s['ks'])} k values up to {max(s['ks'])}, {s['n_rows']} rows x "
            f"{s['n_neurons']} neurons, layer {s['layer']}): mechlin {s['mechlin_s']:.2f} s, "
            f"sklearn per k {s['sklearn_s']:.2f} s = {s['sklearn_s'] / s['mechlin_s']:.1f}x; "
            f"max F1 difference {s['max_f1_diff']:.3g}"
        )


def collection_benchmark(args: argparse.Namespace) -> None:
    out = {}
    for name in ("forward", "blocks", "collect"):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--model",
            args.model,
            "--device",
            args.device,
            "--n-per-language",
            str(args.n_per_language),
            "--batch-size",
            str(args.batch_size),
            "--repeat",
            str(args.repeat),
        ]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        out[name] = json.loads(line.strip().splitlines()[-1])
    f, c = out["forward"], out["collect"]
    print(f"model {args.model} on {args.device}, {f['tokens']} tokens, batch {args.batch_size}")
    for name, r in out.items():
        print(
            f"  {name:8s} {r['tokens'] / r['seconds']:9.0f} tok/s  ({r['seconds']:.2f} s)  "
            f"peak RSS above model +{r['peak_above_model_mb']:.0f} MB"
            + (f", GPU peak {r['gpu_peak_mb']:.0f} MB" if r["gpu_peak_mb"] else "")
        )
    b = out["blocks"]
    print(
        f"  collection overhead: {c['seconds'] / f['seconds']:.2f}x the plain forward, "
        f"{c['seconds'] / b['seconds']:.2f}x the decoder blocks alone"
    )


if __name__ == "__main__":
    main()
