"""Reference expression scoring: one text at a time through the plain Hugging Face model.

No batching, no padding, no hooks, full logits: the log-likelihood of a continuation is the sum
of ``log_softmax(logits)[t - 1, token_t]`` over the continuation's tokens, the tokens being the
Hugging Face tokenizer's own encoding of ``prompt + option`` (BOS as it adds it) after the
tokens of ``prompt``. Used by the tests as ground truth and by
``benchmarks/expression_scoring.py`` as the explicit loop.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def hf_loglik(hf_model, tokenizer, prompt: str, option: str) -> float:
    whole = tokenizer(prompt + option)["input_ids"]
    n_ctx = len(tokenizer(prompt)["input_ids"])
    device = next(hf_model.parameters()).device
    logprobs = hf_model(torch.tensor([whole], device=device)).logits[0].double().log_softmax(-1)
    return float(sum(logprobs[t - 1, whole[t]] for t in range(n_ctx, len(whole))))
