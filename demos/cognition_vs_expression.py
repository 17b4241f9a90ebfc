# %% [markdown]
# # Cognition vs expression (Yan et al. 2024) on the bundled models
#
# What the hidden states know (a per-layer linear probe for the right answer of a
# multiple-choice question) against what the model says (its own answers: cloze likelihoods,
# letters, sampled letters). Three parts:
#
# 1. both bundled models on the shipped sets (ARC-Easy, ARC-Challenge, OpenBookQA,
#    CommonsenseQA; RACE is not available offline);
# 2. an offline checkpoint series: a short letter fine-tuning of gemma-3-270m on ARC-Easy test
#    items (disjoint from every evaluated dev item), then cognition vs expression per checkpoint;
# 3. the gap: how few-shot prompting and pass@k move expression relative to cognition.
#
# Default: a fast size for 2 CPU cores. ``--full`` evaluates whole datasets. CI:
#
#     python demos/cognition_vs_expression.py --models smollm2-135m --datasets arc_easy \
#         --n-items 24 --ft-base smollm2-135m --ft-steps 2 --ft-train 16 --ft-saves 2 \
#         --ft-n-items 24 --n-samples 4 --pass-k 1 4 --shots 0 --out /tmp/cognition_ci.html

# %%
from __future__ import annotations

import argparse
import html
import shutil
import tempfile
import time
from pathlib import Path

import torch

from mechlin import viz
from mechlin.cognition import cognition_vs_expression, finetune_letters
from mechlin.datasets.mcq import MCQ_SETS, load_mcq

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", default="cognition_vs_expression.html")
parser.add_argument("--models", nargs="*", default=["smollm2-135m", "gemma-3-270m"])
parser.add_argument(
    "--datasets",
    nargs="+",
    default=["arc_easy", "arc_challenge", "openbookqa", "commonsenseqa"],
    choices=sorted(set(MCQ_SETS) - {"arc_easy_test"}),
)
parser.add_argument("--n-items", type=int, default=40, help="items per dataset (fast size)")
parser.add_argument("--full", action="store_true", help="every item of every dataset")
parser.add_argument("--shots", type=int, nargs="+", default=[0, 2])
parser.add_argument("--pass-k", type=int, nargs="+", default=[1, 4, 8])
parser.add_argument("--n-samples", type=int, default=16)
parser.add_argument("--temperature", type=float, default=1.0)
parser.add_argument("--probe", choices=["letter", "option"], default="letter")
parser.add_argument("--pca-dim", type=int, default=32)
parser.add_argument("--ft-base", default="gemma-3-270m", help="model to fine-tune ('' to skip)")
parser.add_argument("--ft-steps", type=int, default=40)
parser.add_argument("--ft-train", type=int, default=400, help="fine-tuning items (ARC-Easy test)")
parser.add_argument("--ft-lr", type=float, default=3e-4)
parser.add_argument("--ft-layers", type=int, default=4, help="train the last N layers")
parser.add_argument("--ft-batch", type=int, default=8)
parser.add_argument("--ft-dataset", default=None, help="evaluation set of the series")
parser.add_argument("--ft-n-items", type=int, default=120, help="items evaluated per checkpoint")
parser.add_argument("--ft-saves", type=int, default=3, help="checkpoints, step 0 included")
parser.add_argument("--ft-shots", type=int, nargs="+", default=[0])
parser.add_argument("--keep-checkpoints", action="store_true", help="keep the fine-tuned dirs")
parser.add_argument("--batch-size", type=int, default=16)
parser.add_argument("--device", default=None)
parser.add_argument("--seed", type=int, default=0)
args, _ = parser.parse_known_args()
start = time.perf_counter()
torch.manual_seed(args.seed)

# %% data: evaluation sets (dev), and ARC-Easy test split into a shot pool and a training pool
n = None if args.full else args.n_items
evals = [
    load_mcq(name) if n is None or n >= len(load_mcq(name)) else load_mcq(name, n=n, seed=args.seed)
    for name in args.datasets
]
pool_all = load_mcq("arc_easy_test")
perm = torch.randperm(len(pool_all), generator=torch.Generator().manual_seed(args.seed)).tolist()
shot_pool = pool_all.subset(sorted(perm[:200]), name="arc_easy_test[shots]")
ft_train = pool_all.subset(sorted(perm[200 : 200 + args.ft_train]), name="arc_easy_test[train]")
common = dict(
    shots=tuple(args.shots),
    shot_pool=shot_pool,
    pass_k=tuple(args.pass_k),
    n_samples=args.n_samples,
    temperature=args.temperature,
    probe=args.probe,
    pca_dim=args.pca_dim,
    seed=args.seed,
    batch_size=args.batch_size,
    device=args.device,
)

# %% part 1: the bundled models on every dataset
models = None
if args.models:
    models = cognition_vs_expression({m: m for m in args.models}, evals, **common)
    print(models.summary())

# %% part 2: a fine-tuning series (base, then checkpoints), evaluated the same way
series = run = None
if args.ft_base:
    ckpt_dir = Path(tempfile.mkdtemp(prefix="mechlin_ft_"))
    k = max(2, args.ft_saves)
    save = sorted({round(i * args.ft_steps / (k - 1)) for i in range(k)})
    run = finetune_letters(
        args.ft_base,
        ft_train,
        ckpt_dir,
        steps=args.ft_steps,
        save_steps=save,
        lr=args.ft_lr,
        batch_size=args.ft_batch,
        train_last=args.ft_layers,
        seed=args.seed,
        device=args.device,
    )
    print(run.summary())
    ft_name = args.ft_dataset or args.datasets[0]
    ft_n = None if args.full else args.ft_n_items
    ft_eval = load_mcq(ft_name) if ft_n is None else load_mcq(ft_name, n=ft_n, seed=args.seed)
    series = cognition_vs_expression(
        run.models, ft_eval, **{**common, "shots": tuple(args.ft_shots)}
    )
    print(series.summary())
    if not args.keep_checkpoints:
        shutil.rmtree(ckpt_dir)  # gemma-3-270m checkpoints are 1 GB each


# %% the gap: few-shot and pass@k relative to cognition
def gap_table(result: object) -> str:
    frame = result.to_frame()  # type: ignore[attr-defined]
    rows = frame.pivot_table(
        index=["model", "dataset"], columns=["metric", "shots"], values="gap"
    ).round(3)
    return rows.to_html()


elapsed = time.perf_counter() - start
print(f"done in {elapsed:.0f} s")

# %% report
notes = f"""<p>Cognition: held-out accuracy of a {args.probe} probe on the last prompt token's
residual stream, best layer chosen on validation items (PCA {args.pca_dim}, z-scored, C=1).
Expression: the model's answers (letter = top letter among the item's letters; acc / acc_norm =
lm-eval option log-likelihood; pass@k from {args.n_samples} letters sampled at
T={args.temperature}). Gap = cognition - expression. Few-shot examples come from ARC-Easy test
items (disjoint from the evaluated dev items); fine-tuning items too (disjoint from the shots).
Items per dataset: {"all" if args.full else args.n_items}. Wall time {elapsed:.0f} s.</p>
<p>Yan et al. (2024) report on Baichuan-7B/33B checkpoints that cognition is set in
pretraining, expression rises through SFT/RLHF, the two correlate, and few-shot prompting and
repeated sampling narrow the gap. Small models and small item counts give wide error bars: with
n test items an accuracy has a standard error of about sqrt(p(1-p)/n).</p>"""
sections = [("About", notes)]
if models is not None:
    sections += [
        ("Bundled models: summary", f"<pre>{html.escape(models.summary())}</pre>"),
        ("Bundled models: figure", viz.plot_html(models)),
        ("Bundled models: the gap (cognition - expression)", gap_table(models)),
    ]
    for p in models.probes:
        sections.append((f"Probe curve: {p.model_name} / {p.dataset}", viz.plot_html(p)))
if series is not None and run is not None:
    sections += [
        ("Fine-tuning run", f"<pre>{html.escape(run.summary())}</pre>" + viz.plot_html(run)),
        ("Checkpoint series: summary", f"<pre>{html.escape(series.summary())}</pre>"),
        ("Checkpoint series: figure", viz.plot_html(series)),
        ("Checkpoint series: the gap", gap_table(series)),
    ]
path = viz.write_report(args.out, "Cognition vs expression (Yan et al. 2024)", sections)
for tag, result in (("models", models), ("series", series), ("finetune", run)):
    if result is not None:  # the results themselves, for a closer look (Result.load)
        result.save(Path(args.out).with_suffix(f".{tag}.pt"))
print(f"report: {path}")
