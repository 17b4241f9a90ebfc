"""Slow, obviously-correct references for the origins measures: explicit Python loops."""

from __future__ import annotations

import itertools
import math

import torch


def reference_joint(lcm) -> dict[tuple[int, ...], float]:
    """p(c) of every concept vector, multiplying the conditional tables by hand."""
    out = {}
    for c in itertools.product((0, 1), repeat=lcm.n_concepts):
        p = 1.0
        for i, parents in enumerate(lcm.parents):
            k = sum(c[q] << b for b, q in enumerate(parents))
            t = float(lcm.theta[i][k])
            p *= t if c[i] else 1 - t
        out[c] = p
    return out


def reference_pairs(codes: torch.Tensor, i: int) -> list[tuple[int, int]]:
    rows = [tuple(r) for r in codes.tolist()]
    out = []
    for a, ra in enumerate(rows):
        for b, rb in enumerate(rows):
            if (
                ra[i] == 0
                and rb[i] == 1
                and all(x == y for j, (x, y) in enumerate(zip(ra, rb, strict=True)) if j != i)
            ):
                out.append((a, b))
    return out


def reference_mean_cosine(diffs: torch.Tensor) -> float:
    vals = []
    for a in range(len(diffs)):
        for b in range(a + 1, len(diffs)):
            x, y = diffs[a].double(), diffs[b].double()
            vals.append(float(x @ y) / math.sqrt(float(x @ x) * float(y @ y)))
    return sum(vals) / len(vals) if vals else float("nan")


def reference_expected_loss(f, g, data) -> float:
    idx = data.train.nonzero().flatten().tolist()
    total_w = sum(float(data.weight[x]) for x in idx)
    loss = 0.0
    for r, x in enumerate(idx):
        logits = [float(f[r].double() @ g[y].double()) for y in range(len(g))]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(v - top) for v in logits))
        for y in range(len(g)):
            t = float(data.target[x, y])
            if t > 0:
                loss -= float(data.weight[x]) / total_w * t * (logits[y] - log_z)
    return loss
