"""Batched expression scoring against an explicit one-text-at-a-time loop, in one run.

The loop is the obviously-correct reference: every (question, option) text goes alone through
the Hugging Face model, full logits, log-softmax, sum over the option's tokens. The batched path
is ``mechlin.cognition.expression_scores`` (right padding, per-row gather, unembedding only the
scored rows). Both score the same cloze requests; the script checks they agree and prints the
time of each, the ratio, and tokens per second. lm-evaluation-harness is not installed here,
so it is not timed (install it and run ``lm_eval --tasks arc_easy`` to compare).

    python benchmarks/expression_scoring.py --model smollm2-135m --n-items 16
"""

from __future__ import annotations

import argparse
import time

import torch

import mechlin
from mechlin.cognition import cloze_context, cloze_options, encode_continuation, expression_scores
from mechlin.datasets.mcq import load_mcq

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--dataset", default="arc_easy")
parser.add_argument("--n-items", type=int, default=16)
parser.add_argument("--batch-size", type=int, default=16)
parser.add_argument("--device", default="cpu")
args = parser.parse_args()

torch.set_grad_enabled(False)
model = mechlin.load_model(args.model, device=args.device)
hf, _ = mechlin.load_hf_model(args.model)  # the plain Hugging Face model
hf = hf.to(args.device)
ds = load_mcq(args.dataset, n=args.n_items, seed=0)
pairs = [encode_continuation(model, cloze_context(it), o) for it in ds for o in cloze_options(it)]
n_tokens = sum(len(whole) for whole, _ in pairs)

# warm-up (first calls allocate)
expression_scores(model, ds.subset([0]), progress=False)

t0 = time.perf_counter()
loop = []
for whole, n_ctx in pairs:
    logits = hf(torch.tensor([whole], device=args.device)).logits[0].float()
    logprobs = logits.log_softmax(-1)
    loop.append(sum(float(logprobs[t - 1, whole[t]]) for t in range(n_ctx, len(whole))))
t_loop = time.perf_counter() - t0

t0 = time.perf_counter()
scores = expression_scores(model, ds, batch_size=args.batch_size, progress=False)
t_batched = time.perf_counter() - t0  # includes the letter prompts (one more pass per item)

flat = scores.option_loglik[torch.isfinite(scores.option_loglik)]
err = (flat - torch.tensor(loop, dtype=torch.float64)).abs().max()
print(
    f"{args.model}, {len(ds)} {args.dataset} items, {len(pairs)} cloze requests, {n_tokens} tokens"
)
print(f"explicit loop (cloze only):          {t_loop:7.2f} s  {n_tokens / t_loop:8.0f} tok/s")
print(f"expression_scores (cloze + letters): {t_batched:7.2f} s  {n_tokens / t_batched:8.0f} tok/s")
print(f"speed-up {t_loop / t_batched:.2f}x; max |difference| {float(err):.2e}")
print("lm-evaluation-harness: not installed, not timed")
