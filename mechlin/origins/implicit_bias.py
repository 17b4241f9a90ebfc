"""Gradient descent's implicit bias with the context embeddings fixed: a closed-form check.

Jiang et al. (2024) attribute the orthogonality of concept directions to the implicit bias of
gradient descent, proved in a setting where the context embeddings are fixed and only the
unembeddings ``G`` are trained (the paper's Theorem 4; its exact assumptions could not be read
here, so this module states and checks the setting it implements). With fixed context
embeddings ``F`` (one row per context, orthonormal: ``F F^T = I``) the logits are
``L = F G^T`` and gradient descent on ``G`` is gradient descent on ``L``, column by column.

The next-token law gives zero probability to every token outside a context's *support* (tokens
that disagree with a fixed concept), so those logits are driven to ``-inf``: the loss has no
minimiser and ``G(t)`` grows without bound. For losses with exponential tails, gradient descent
converges in direction to the hard-margin solution (Soudry et al. 2018; Ji & Telgarsky 2019 for
the part that is not separable): ``G(t) = log(t) G_mm + O(1)``, with ``G_mm`` the least-norm
``G`` such that ``L[x, y] - L[x, y'] >= 1`` for every context ``x``, ``y`` in its support and
``y'`` outside. With orthonormal ``F`` that problem splits by context and has a closed form:
column ``x`` of ``L_mm`` is ``1 - s/V`` on the support and ``-s/V`` off it (``s`` its size,
``V`` the vocabulary), and ``G_mm = L_mm^T F``. Probabilities do not enter it: only supports.

``fixed_embedding_check`` runs the gradient descent and measures how the increments
``G(2t) - G(t)`` approach ``log(2) G_mm`` (their cosine with ``G_mm`` goes to 1, their norm
ratio to ``log 2``), and the Euclidean |cos| between concept directions (mean pair
differences) in ``G(t)`` and in ``G_mm``, for independent and dependent concepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechlin import viz
from mechlin._checks import checked
from mechlin.errors import ArgumentError, OutOfRangeError
from mechlin.origins.latent import LatentConceptModel, TokenSet, build_tokens
from mechlin.origins.measures import concept_gram, concept_pairs, split_by_independence
from mechlin.results import Result


@checked
def max_margin_unembeddings(
    F: Float[Tensor, "context d"], data: TokenSet
) -> Float[Tensor, "vocab d"]:
    """The hard-margin ``G_mm`` for orthonormal context embeddings ``F`` (module doc)."""
    F = F.double()
    gram = F @ F.T
    if not torch.allclose(gram, torch.eye(len(F), dtype=F.dtype), atol=1e-9):
        raise ArgumentError(
            "the closed form needs orthonormal context embeddings (F F^T = I): pass F with "
            "orthonormal rows, e.g. from torch.linalg.qr"
        )
    support = (data.target > 0).double()  # (context, vocab)
    s = support.sum(1, keepdim=True)
    logits = support - s / support.shape[1]  # (context, vocab)
    return logits.T @ F


@dataclass(frozen=True)
class FixedEmbeddingCheck(Result):
    """Gradient descent on the unembeddings against the hard-margin direction."""

    steps: Int[Tensor, " record"]  # t = 1, 2, 4, ...
    increment_cosine: Float[Tensor, " record"]  # cos(G(t) - G(t/2), G_mm), first entry NaN
    increment_ratio: Float[Tensor, " record"]  # ||G(t) - G(t/2)|| / ||G_mm|| (-> log 2)
    direction_cosine: Float[Tensor, " record"]  # cos(G(t), G_mm) (-> 1 like 1/log t)
    orth_independent: Float[Tensor, " record"]  # mean |cos| of independent concepts in G(t)
    orth_dependent: Float[Tensor, " record"]
    mm_orth_independent: float  # the same in G_mm
    mm_orth_dependent: float
    n_concepts: int
    n_contexts: int
    n_tokens: int
    lr: float

    _nonfinite = frozenset({"increment_cosine", "increment_ratio", "orth_independent",
                            "orth_dependent"})  # fmt: skip

    def summary(self) -> str:
        return "\n".join(
            [
                f"fixed orthonormal context embeddings ({self.n_contexts} contexts, "
                f"{self.n_tokens} tokens, m={self.n_concepts}); gradient descent on G, lr "
                f"{self.lr}, to t={int(self.steps[-1])}",
                f"increment G(t) - G(t/2) vs the hard-margin G_mm: cosine "
                f"{float(self.increment_cosine[-1]):.6f} (-> 1), norm ratio "
                f"{float(self.increment_ratio[-1]):.4f} (-> log 2 = {math.log(2):.4f})",
                f"cos(G(t), G_mm) = {float(self.direction_cosine[-1]):.4f} (-> 1 like 1/log t)",
                f"|cos| of concept directions in G(t): independent "
                f"{float(self.orth_independent[-1]):.4f}, dependent "
                f"{float(self.orth_dependent[-1]):.4f}; in G_mm: independent "
                f"{self.mm_orth_independent:.4f}, dependent {self.mm_orth_dependent:.4f}",
            ]
        )

    def plot(self, ax: Any = None) -> Any:
        fig, ax = viz.axes(ax, figsize=(6, 4))
        t = self.steps.numpy()
        ax.plot(t, 1 - self.increment_cosine.numpy(), "o-", label="1 - cos(G(t) - G(t/2), G_mm)")
        ax.plot(t, 1 - self.direction_cosine.numpy(), "s-", label="1 - cos(G(t), G_mm)")
        ax.plot(t, (self.increment_ratio.numpy() - math.log(2)).__abs__(), "^-",
                label="|ratio - log 2|")  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="step t", title="convergence to max margin")
        ax.legend(fontsize=7)
        return fig


@checked
def fixed_embedding_check(
    lcm: LatentConceptModel,
    *,
    steps: int = 2**14,
    lr: float | int = 1.0,
    core_prob: float | int = 0.5,
    seed: int = 0,
    progress: bool = False,
) -> FixedEmbeddingCheck:
    """Train ``G`` alone by gradient descent with fixed orthonormal ``F``; compare to ``G_mm``.

    Every concept vector is a token and every context pattern a context (``m <= 6``); ``F`` is
    a random orthogonal matrix (``d`` = number of contexts). Records at ``t = 1, 2, 4, ...``.
    """
    if lcm.n_concepts > 6:
        raise OutOfRangeError(
            f"n_concepts={lcm.n_concepts}: the check enumerates 3^m contexts; use m <= 6"
        )
    if steps < 2 or not lr > 0:
        raise OutOfRangeError(f"need steps >= 2 and lr > 0, got steps={steps}, lr={lr}")
    data = build_tokens(lcm, core_prob=core_prob, seed=seed)
    n_ctx, n_tok = data.target.shape
    gen = torch.Generator().manual_seed(seed)
    F, _ = torch.linalg.qr(torch.randn(n_ctx, n_ctx, generator=gen, dtype=torch.float64))
    G = torch.zeros(n_tok, n_ctx, dtype=torch.float64)
    w = (data.weight / data.weight.sum()).double()
    T = data.target.double()
    g_mm = max_margin_unembeddings(F, data)
    pairs = concept_pairs(data.tokens)
    independent = lcm.independent_pairs()
    mm_i, mm_d = split_by_independence(concept_gram(g_mm, pairs), independent)
    rec: dict[str, list[float]] = {k: [] for k in ("t", "ic", "ir", "dc", "oi", "od")}
    previous: Tensor | None = None
    nxt = 1
    for t in tqdm(range(1, steps + 1), disable=not progress, desc="gradient descent on G"):
        logits = F @ G.T
        G -= lr * (w[:, None] * (logits.softmax(1) - T)).T @ F
        if t == nxt:
            cos = torch.nn.functional.cosine_similarity
            rec["t"].append(t)
            if previous is None:
                rec["ic"].append(math.nan)
                rec["ir"].append(math.nan)
            else:
                inc = (G - previous).flatten()
                rec["ic"].append(float(cos(inc, g_mm.flatten(), dim=0)))
                rec["ir"].append(float(inc.norm() / g_mm.norm()))
            rec["dc"].append(float(cos(G.flatten(), g_mm.flatten(), dim=0)))
            oi, od = split_by_independence(concept_gram(G, pairs), independent)
            rec["oi"].append(oi)
            rec["od"].append(od)
            previous = G.clone()
            nxt *= 2
    return FixedEmbeddingCheck(
        steps=torch.tensor(rec["t"]),
        increment_cosine=torch.tensor(rec["ic"], dtype=torch.float64),
        increment_ratio=torch.tensor(rec["ir"], dtype=torch.float64),
        direction_cosine=torch.tensor(rec["dc"], dtype=torch.float64),
        orth_independent=torch.tensor(rec["oi"], dtype=torch.float64),
        orth_dependent=torch.tensor(rec["od"], dtype=torch.float64),
        mm_orth_independent=mm_i,
        mm_orth_dependent=mm_d,
        n_concepts=lcm.n_concepts,
        n_contexts=n_ctx,
        n_tokens=n_tok,
        lr=float(lr),
    )
