"""Reference attention knockout: one plain forward per (centre layer, source set)."""

from __future__ import annotations

import torch

import mechlin
from mechlin.recall.tracing import window_layers


@torch.no_grad()
def reference_knockout(model, prompt, sources, centres, window, answer_id):
    """log p(answer) with last-position attention to ``sources`` blocked, per centre layer."""
    tokens = model.to_tokens(prompt)
    out = []
    for centre in centres:
        hooks = []
        for layer in window_layers(centre, window, model.cfg.n_layers):

            def block(scores, hook):
                scores = scores.clone()
                for s in sources:
                    scores[:, :, -1, s] = float("-inf")
                return scores

            hooks.append((mechlin.hook_name(model, "attn_scores", layer), block))
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1].float()
        out.append(logits.log_softmax(-1)[answer_id])
    return torch.stack(out)
