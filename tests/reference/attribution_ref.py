"""Reference attribution estimate: the derivative of each restoration, one cell at a time.

For a cell restoring the site states {(layer j, position t)}, the first-order estimate of
attribution patching is the sum over the window's layers j of d/de g_j(e) at e = 0, where
g_j(e) is the metric (mean over the corrupted rows) of the corrupted run with state (j, t) set
to corrupted + e (clean - corrupted). Here each derivative is taken directly: one plain forward
per (cell, layer) with e a scalar that requires grad, then autograd of g_j with respect to e
(the exact linearisation, computed independently of TransformerLens's gradient cache and of
mechlin's batching). ``finite_difference`` measures the same derivative by central differences,
to check this reference itself. Obviously correct, slow.
"""

from __future__ import annotations

import torch

import mechlin
from mechlin.recall.tracing import window_layers


def _setup(model, prompt, subject, kind, corrupted_prompt, noise):
    clean = model.to_tokens(prompt)
    span = mechlin.find_subject_span(model, prompt, subject)
    corrupt = (
        model.to_tokens(corrupted_prompt) if corrupted_prompt else clean.expand(noise.shape[0], -1)
    )
    site = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}[kind]
    names = [mechlin.hook_name(model, site, j) for j in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=names)
    return clean, span, corrupt, names, cache


def _metric(logits, metric, answer_id, contrast_id):
    if metric == "prob":
        return logits.softmax(-1)[:, answer_id]
    if metric == "logprob":
        return logits.log_softmax(-1)[:, answer_id]
    return logits[:, answer_id] - logits[:, contrast_id]


def _g(model, corrupt, names, cache, span, noise, j, t, eps, metric, answer_id, contrast_id):
    s0, s1 = span
    eps = torch.as_tensor(eps)

    def noise_hook(x, hook):
        x = x.clone()
        x[:, s0:s1] += noise.to(x.dtype)
        return x

    def move(x, hook):
        x = x.clone()
        step = eps.reshape(-1, 1).to(x.dtype)  # a scalar, or one per corrupted row
        x[:, t] = x[:, t] + step * (cache[names[j]][0, t] - x[:, t])
        return x

    hooks = [(names[j], move)]
    if noise is not None:
        hooks.append((mechlin.hook_name(model, "embed"), noise_hook))
    logits = model.run_with_hooks(corrupt, fwd_hooks=hooks)[:, -1].float()
    per_row = _metric(logits, metric, answer_id, contrast_id)
    return per_row if eps.ndim else per_row.mean()


def reference_estimate(
    model,
    prompt,
    subject,
    *,
    kind,
    window,
    answer_id,
    noise,
    metric,
    corrupted_prompt=None,
    contrast_id=None,
):
    """Estimated indirect effect [layer, position]: autograd of each restoration's metric."""
    clean, span, corrupt, names, cache = _setup(
        model, prompt, subject, kind, corrupted_prompt, noise
    )
    n_layers, n_pos = model.cfg.n_layers, clean.shape[1]
    per_layer = torch.zeros(n_layers, n_pos, dtype=torch.float64)
    for j in range(n_layers):
        for t in range(n_pos):
            eps = torch.zeros((), dtype=cache[names[j]].dtype, requires_grad=True)
            with torch.enable_grad():
                g = _g(
                    model,
                    corrupt,
                    names,
                    cache,
                    span,
                    noise,
                    j,
                    t,
                    eps,
                    metric,
                    answer_id,
                    contrast_id,
                )
                (d,) = torch.autograd.grad(g, eps)
            per_layer[j, t] = float(d)
    if kind == "resid":
        return per_layer
    return torch.stack(
        [per_layer[list(window_layers(j, window, n_layers))].sum(0) for j in range(n_layers)]
    )


@torch.no_grad()
def finite_difference(
    model, prompt, subject, *, kind, layer, position, answer_id, noise, metric, h
):
    """d g / d e at e = 0 for one (layer, position) by central differences."""
    _, span, corrupt, names, cache = _setup(model, prompt, subject, kind, None, noise)
    args = (model, corrupt, names, cache, span, noise, layer, position)
    up = _g(*args, h, metric, answer_id, None)
    down = _g(*args, -h, metric, answer_id, None)
    return float(up - down) / (2 * h)


def reference_logprob_estimate(model, prompt, subject, *, kind, window, answer_id, noise):
    """``linearize="logprob"`` for the probability: per corrupted row i, d_i = the derivative
    of log p_i along each restoration of the window (autograd with one step size per row, so
    each row's derivative is its own), read back as exp(min(log p_i + d_i, 0)) - p_i and
    averaged over rows."""
    clean, span, corrupt, names, cache = _setup(model, prompt, subject, kind, None, noise)
    n_layers, n_pos, rows = model.cfg.n_layers, clean.shape[1], corrupt.shape[0]
    per_layer = torch.zeros(rows, n_layers, n_pos, dtype=torch.float64)
    for j in range(n_layers):
        for t in range(n_pos):
            eps = torch.zeros(rows, dtype=torch.float64, requires_grad=True)
            with torch.enable_grad():
                g = _g(
                    model, corrupt, names, cache, span, noise, j, t, eps, "logprob", answer_id, None
                )
                (d,) = torch.autograd.grad(g.sum(), eps)
            per_layer[:, j, t] = d
    if kind != "resid":
        per_layer = torch.stack(
            [
                per_layer[:, list(window_layers(j, window, n_layers))].sum(1)
                for j in range(n_layers)
            ],
            1,
        )
    with torch.no_grad():
        zero = torch.zeros(rows, dtype=torch.float64)
        logp = _g(model, corrupt, names, cache, span, noise, 0, 0, zero, "logprob", answer_id, None)
    logp = logp.double()[:, None, None]
    return (torch.exp((logp + per_layer).clamp(max=0)) - torch.exp(logp)).mean(0)
