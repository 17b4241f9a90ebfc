"""Reference causal tracing: ROME's loop, one plain forward per cell. Obviously correct, slow.

Mirrors kmeng01/rome ``experiments/causal_trace.py`` (``trace_with_patch``): a batch whose row
0 is the clean prompt and rows 1.. the corrupted ones (noise added to the subject embeddings,
or the corrupted prompt); the restored states of rows 1.. are overwritten with row 0's; the
score is the mean over rows 1.. of the metric at the last position. Used by the tests as the
ground truth and by ``benchmarks/causal_trace.py`` as the "ROME-style loop" peer.
"""

from __future__ import annotations

import torch

import mechlin
from mechlin.recall.tracing import window_layers


@torch.no_grad()
def trace_cell(model, clean, corrupt, noise, span, restore, metric_fn):
    """Metric averaged over corrupted rows, with ``restore`` = [(hook name, position), ...]."""
    tokens = torch.cat([clean, corrupt])
    s0, s1 = span
    hooks = []
    if noise is not None:

        def add_noise(x, hook):
            x = x.clone()
            x[1:, s0:s1] += noise.to(x.dtype)
            return x

        hooks.append((mechlin.hook_name(model, "embed"), add_noise))
    for name, pos in restore:

        def patch(x, hook, pos=pos):
            x = x.clone()
            x[1:, pos] = x[0, pos]
            return x

        hooks.append((name, patch))
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return metric_fn(logits[1:, -1].float()).mean().item()


def reference_trace(
    model,
    prompt,
    subject,
    *,
    kind,
    window,
    answer_id,
    noise,
    corrupted_prompt,
    metric,
    contrast_id=None,
    layers=None,
    positions=None,
):
    """scores[layer, position], p_clean, p_corrupt: one forward per cell."""
    clean = model.to_tokens(prompt)
    span = mechlin.find_subject_span(model, prompt, subject)
    if corrupted_prompt is not None:
        corrupt = model.to_tokens(corrupted_prompt)
    else:
        corrupt = clean.expand(noise.shape[0], -1)

    def metric_fn(logits):
        # In float64: a float32 softmax over a vocabulary of 49k tokens is off by ~1e-5 at
        # p = 0.7, by an amount that depends on the CPU's reduction order (SIMD width); the
        # engines sum the normalizer in float64 too. The logits themselves stay float32.
        logits = logits.double()
        if metric == "prob":
            return logits.softmax(-1)[:, answer_id]
        if metric == "logprob":
            return logits.log_softmax(-1)[:, answer_id]
        return logits[:, answer_id] - logits[:, contrast_id]

    n_layers = model.cfg.n_layers
    layers = range(n_layers) if layers is None else layers
    positions = range(clean.shape[1]) if positions is None else positions
    site = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}[kind]
    scores = torch.zeros(len(layers), len(positions))
    for i, layer in enumerate(layers):
        restored = [layer] if kind == "resid" else window_layers(layer, window, n_layers)
        for j, pos in enumerate(positions):
            restore = [(mechlin.hook_name(model, site, r), pos) for r in restored]
            scores[i, j] = trace_cell(model, clean, corrupt, noise, span, restore, metric_fn)
    p_corrupt = trace_cell(model, clean, corrupt, noise, span, [], metric_fn)
    with torch.no_grad():
        p_clean = metric_fn(model(clean)[:, -1].float()).item()
    return scores, p_clean, p_corrupt
