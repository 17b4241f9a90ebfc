"""Slow, obviously-correct references for concept directions, their tests, and steering.

Each computes the quantity by another route than mechlin: whitening from the SVD of the
centred unembedding (not ``eigh`` of an accumulated covariance), directions and leave-one-out
projections by explicit loops over pairs, steering with a hand-written hook.
"""

from __future__ import annotations

import math

import torch


def reference_whitening(w_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean row, Cov (population) and Cov^-1/2 of the rows of W_U.T, via an explicit loop + SVD."""
    gamma = w_u.T.double()  # (vocab, d)
    n, d = gamma.shape
    mean = torch.zeros(d, dtype=torch.float64)
    for row in gamma:
        mean += row
    mean /= n
    cov = torch.zeros(d, d, dtype=torch.float64)
    for row in gamma:
        cov += torch.outer(row - mean, row - mean)
    cov /= n
    # Cov = V diag(S^2 / n) V^T from the SVD of the centred matrix.
    _, s, vh = torch.linalg.svd(gamma - mean, full_matrices=False)
    inv_sqrt = vh.T @ torch.diag(math.sqrt(n) / s) @ vh
    return mean, cov, inv_sqrt


def reference_directions(
    w_u: torch.Tensor, pairs: list[list[tuple[int, int]]], inv_sqrt: torch.Tensor
) -> torch.Tensor:
    """normalize(mean over pairs of (gamma[y1] - gamma[y0]) Cov^-1/2), one concept at a time."""
    gamma = w_u.T.double()
    out = []
    for concept in pairs:
        total = torch.zeros(gamma.shape[1], dtype=torch.float64)
        for y0, y1 in concept:
            total += (gamma[y1] - gamma[y0]) @ inv_sqrt
        mean = total / len(concept)
        out.append(mean / mean.norm())
    return torch.stack(out)


def reference_loo(
    w_u: torch.Tensor, concept: list[tuple[int, int]], inv_sqrt: torch.Tensor
) -> list[float]:
    """Each pair's whitened difference on the normalized mean of the other pairs' differences."""
    gamma = w_u.T.double()
    diffs = [(gamma[y1] - gamma[y0]) @ inv_sqrt for y0, y1 in concept]
    out = []
    for i, diff in enumerate(diffs):
        others = [d for j, d in enumerate(diffs) if j != i]
        direction = sum(others) / len(others)
        out.append(float(diff @ (direction / direction.norm())))
    return out


def reference_cohens_d(x: list[float], y: list[float]) -> float:
    """(mean x - mean y) / pooled sample standard deviation, in plain Python."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    vx = sum((v - mx) ** 2 for v in x) / (len(x) - 1)
    vy = sum((v - my) ** 2 for v in y) / (len(y) - 1)
    pooled = ((len(x) - 1) * vx + (len(y) - 1) * vy) / (len(x) + len(y) - 2)
    return (mx - my) / math.sqrt(pooled)


@torch.no_grad()
def reference_steered_logits(model, tokens, vector, hook_name, alpha, positions):
    """Logits with ``alpha * vector`` added at each listed position, one position at a time."""

    def add(act, hook):
        act = act.clone()
        n_pos = act.shape[1]
        chosen = range(n_pos) if positions == "all" else positions
        if positions == "last":
            chosen = [n_pos - 1]
        for b in range(act.shape[0]):
            for p in chosen:
                act[b, p] = act[b, p] + alpha * vector.to(act.dtype)
        return act

    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, add)])


@torch.no_grad()
def reference_interchange(model, base_tokens, source_tokens, unit, hook_name, ids):
    """Base run with its last-position coordinate along ``unit`` set to the source's."""
    saved = []
    model.run_with_hooks(
        source_tokens, fwd_hooks=[(hook_name, lambda act, hook: saved.append(act[0, -1].clone()))]
    )

    def swap(act, hook):
        act = act.clone()
        h = act[0, -1]
        act[0, -1] = h + ((saved[0] - h) @ unit) * unit
        return act

    logits = model.run_with_hooks(base_tokens, fwd_hooks=[(hook_name, swap)])[0, -1]
    return float(logits[ids[1]] - logits[ids[0]])
