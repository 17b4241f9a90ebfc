"""Linearity and orthogonality of concepts in a trained latent-concept model (Jiang et al. 2024).

*Linearity* of concept ``i`` in the unembedding ``g``: take every pair of tokens ``(y0, y1)``
whose concept vectors differ only in concept ``i`` (``c_i(y0) = 0``, ``c_i(y1) = 1``); the
concept is linear when the differences ``g(y1) - g(y0)`` are parallel. The score is the mean
cosine over all distinct pairs of those differences,

    L_i = (||sum_k u_k||^2 - n) / (n (n - 1)),   u_k = unit difference k,

which is 1 for exactly parallel differences. The baseline is the same statistic for ``n`` random
token pairs (unordered, so its expectation is 0). The same measure on the context
representations ``f(x)`` uses context pairs that differ only in concept ``i`` (both core, every
other concept equal, unknown ones included).

*Orthogonality*: concept ``i``'s direction is the normalized mean of its differences; the
Euclidean cosine between two concepts' directions is split by whether the DAG makes them
independent (Jiang et al. find independent concepts nearly orthogonal under the Euclidean inner
product, an effect of gradient descent's implicit bias).

A concept with fewer than two pairs (possible with an incomplete vocabulary) scores NaN.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechlin._checks import checked
from mechlin.errors import ArgumentError


@checked
def differing_pairs(codes: Int[Tensor, "n concept"], i: int) -> Int[Tensor, "pair 2"]:
    """Rows ``(a, b)`` of ``codes`` equal except in column ``i``, ``codes[a, i]=0, codes[b, i]=1``.

    The rows of ``codes`` must be distinct (tokens and context patterns are).
    """
    if not 0 <= i < codes.shape[1]:
        raise ArgumentError(f"concept {i} is out of range for {codes.shape[1]} concepts")
    rest = torch.cat([codes[:, :i], codes[:, i + 1 :]], 1)  # (n, concept - 1)
    _, group = torch.unique(rest, dim=0, return_inverse=True)  # (n,) id of the other columns
    zeros = (codes[:, i] == 0).nonzero().flatten()
    ones = (codes[:, i] == 1).nonzero().flatten()
    lookup = torch.full((len(codes),), -1, dtype=torch.long)
    lookup[group[ones]] = ones
    partner = lookup[group[zeros]]  # (zeros,) the row with a 1 in column i, or -1
    found = partner >= 0
    return torch.stack([zeros[found], partner[found]], 1)


def concept_pairs(codes: Int[Tensor, "n concept"]) -> tuple[Tensor, ...]:
    """``differing_pairs`` of every concept (compute once, measure many times)."""
    return tuple(differing_pairs(codes, i) for i in range(codes.shape[1]))


@checked
def mean_pairwise_cosine(diffs: Float[Tensor, "n d"]) -> float:
    """Mean cosine over the ``n (n - 1) / 2`` distinct pairs of rows (NaN if ``n < 2``)."""
    n = diffs.shape[0]
    if n < 2:
        return float("nan")
    u = diffs.double() / diffs.double().norm(dim=1, keepdim=True).clamp_min(1e-300)
    s = u.sum(0)
    return float((s @ s - (u * u).sum()) / (n * (n - 1)))


@checked
def linearity(
    vectors: Float[Tensor, "n d"], pairs: tuple[Tensor, ...]
) -> Float[Tensor, " concept"]:
    """``L_i`` for every concept: mean pairwise cosine of its pair differences (module doc)."""
    out = []
    for p in pairs:
        out.append(mean_pairwise_cosine(vectors[p[:, 1]] - vectors[p[:, 0]]))
    return torch.tensor(out, dtype=torch.float64)


def random_pair_baseline(vectors: Float[Tensor, "n d"], n_pairs: int, *, seed: int = 0) -> float:
    """The statistic of ``n_pairs`` random (unordered) pairs of distinct rows: about 0."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(len(vectors), (n_pairs,), generator=gen)
    b = (a + torch.randint(1, len(vectors), (n_pairs,), generator=gen)) % len(vectors)
    return mean_pairwise_cosine(vectors[b] - vectors[a])


@checked
def concept_gram(
    vectors: Float[Tensor, "n d"], pairs: tuple[Tensor, ...]
) -> Float[Tensor, "concept concept"]:
    """Euclidean cosines between concept directions (normalized mean pair differences)."""
    dirs = []
    for p in pairs:
        if len(p) == 0:
            dirs.append(torch.full((vectors.shape[1],), float("nan"), dtype=torch.float64))
            continue
        mean = (vectors[p[:, 1]] - vectors[p[:, 0]]).double().mean(0)
        dirs.append(mean / mean.norm().clamp_min(1e-300))
    unit = torch.stack(dirs)  # (concept, d)
    return unit @ unit.T


def split_by_independence(
    gram: Float[Tensor, "concept concept"], independent: Tensor
) -> tuple[float, float]:
    """Mean |cosine| over independent pairs and over dependent pairs (``i < j``; NaN if none)."""
    m = gram.shape[0]
    upper = torch.triu(torch.ones(m, m, dtype=torch.bool), 1)
    vals = gram.abs()
    ind, dep = upper & independent, upper & ~independent
    keep = ~vals.isnan()
    mean_ind = vals[ind & keep].mean() if (ind & keep).any() else torch.tensor(float("nan"))
    mean_dep = vals[dep & keep].mean() if (dep & keep).any() else torch.tensor(float("nan"))
    return float(mean_ind), float(mean_dep)
