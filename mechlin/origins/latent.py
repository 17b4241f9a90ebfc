"""The latent-concept model of Jiang et al. (2024): binary concepts on a random DAG.

Jiang, Rajendran, Ravikumar, Aragam & Veitch ("On the Origins of Linear Representations in Large
Language Models", ICML 2024, arXiv 2403.03867) model a context ``x`` and its next token ``y`` as
sharing a latent space of ``m`` binary concepts ``c in {0, 1}^m``. The concepts are dependent: their
joint law is a Bayesian network on a random DAG (the paper speaks of a Markov random field). Here
node ``i`` may have parents among ``0..i-1`` (each edge kept with probability ``edge_prob``, at
most ``max_parents`` of them), and ``p(c_i = 1 | parents)`` is one Bernoulli parameter per
configuration of the parents, drawn uniformly from ``p_range`` (the paper's [0.3, 0.7]).

A *context* fixes some concepts (the "core" concepts) and leaves the rest unknown (the paper's
diamond, ``-1`` here); its next token is a full concept vector drawn from ``p(c | core)``.
``TokenSet`` holds what training needs, all exact: the vocabulary (every one of the ``2^m``
concept vectors for small ``m``, or ``n_tokens`` sampled ones, so that ``m >> d`` is possible),
the token law ``q(y)`` (``p(c)`` restricted to the vocabulary), the contexts, their weights and
the exact next-token law ``Q[x, y] = q(y | core(x))``. Contexts are drawn as the paper does: a
concept vector from ``q``, each concept kept as core with probability ``core_prob``. The two
robustness experiments are options: ``context_fraction < 1`` keeps only part of the context
patterns for training, ``token_fraction < 1`` drops concept vectors from the vocabulary.

What is exact and how: ``joint()`` enumerates all ``2^m`` vectors (``m <= MAX_ENUMERATE``);
``independent_pairs(method="dag")`` uses d-separation with an empty conditioning set (two
concepts are marginally independent iff they share no ancestor, themselves included), valid
for any ``m``; ``method="exact"`` compares ``p(c_i, c_j)`` with ``p(c_i) p(c_j)`` on the
enumerated joint. The two agree for almost every draw of the parameters (faithfulness); a test
checks it.

mechlin's choices (the paper's values are not known to us): ``edge_prob=0.3``,
``max_parents=3``, ``core_prob=0.5``, the parents-before-children node order, sampled contexts
and vocabularies for large ``m``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechlin._checks import checked
from mechlin.errors import ArgumentError, ArgumentTypeError, EmptyInputError, OutOfRangeError

MAX_ENUMERATE = 16  # 2^16 concept vectors: the largest joint enumerated exactly


def _check_fraction(name: str, value: float | int, *, allow_zero: bool = False) -> None:
    lo_ok = value >= 0 if allow_zero else value > 0
    if not (lo_ok and value <= 1):
        span = "[0, 1]" if allow_zero else "(0, 1]"
        raise OutOfRangeError(f"{name}={value!r} is out of range: it must lie in {span}")


class LatentConceptModel:
    """``m`` binary concepts on a random DAG with Bernoulli conditionals (Jiang et al. 2024).

    >>> lcm = LatentConceptModel(4, edge_prob=0.5, seed=0)
    >>> round(lcm.joint().sum().item(), 12), lcm.sample(3).shape
    (1.0, torch.Size([3, 4]))
    """

    def __init__(
        self,
        n_concepts: int,
        *,
        edge_prob: float | int = 0.3,
        p_range: tuple[float | int, float | int] = (0.3, 0.7),
        max_parents: int = 3,
        seed: int = 0,
    ) -> None:
        if isinstance(n_concepts, bool) or not isinstance(n_concepts, int):
            raise ArgumentTypeError(f"n_concepts must be an int, not {type(n_concepts).__name__}")
        if n_concepts < 1:
            raise OutOfRangeError(f"n_concepts={n_concepts} is out of range: it must be >= 1")
        _check_fraction("edge_prob", edge_prob, allow_zero=True)
        lo, hi = p_range
        if not 0 < lo <= hi < 1:
            raise OutOfRangeError(f"p_range={p_range!r}: need 0 < low <= high < 1")
        if max_parents < 0:
            raise OutOfRangeError(f"max_parents={max_parents} is out of range: it must be >= 0")
        gen = torch.Generator().manual_seed(seed)
        parents: list[tuple[int, ...]] = []
        theta: list[Tensor] = []
        for i in range(n_concepts):
            keep = (torch.rand(i, generator=gen, dtype=torch.float64) < edge_prob).nonzero()
            chosen = keep.flatten().tolist()
            if len(chosen) > max_parents:  # keep a random max_parents of them
                order = torch.randperm(len(chosen), generator=gen)[:max_parents]
                chosen = sorted(chosen[j] for j in order.tolist())
            parents.append(tuple(chosen))
            u = torch.rand(2 ** len(chosen), generator=gen, dtype=torch.float64)
            theta.append(lo + (hi - lo) * u)  # p(c_i = 1 | parent configuration)
        self.n_concepts = n_concepts
        self.edge_prob = float(edge_prob)
        self.p_range = (float(lo), float(hi))
        self.max_parents = max_parents
        self.seed = seed
        self.parents: tuple[tuple[int, ...], ...] = tuple(parents)
        self.theta: tuple[Tensor, ...] = tuple(theta)  # theta[i][k]: k = parents as binary

    def __repr__(self) -> str:
        n_edges = sum(len(p) for p in self.parents)
        return (
            f"LatentConceptModel(n_concepts={self.n_concepts}, edges={n_edges}, seed={self.seed})"
        )

    # --- structure ----------------------------------------------------------------------

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(parent, child) pairs of the DAG."""
        return tuple((p, i) for i, ps in enumerate(self.parents) for p in ps)

    def ancestors(self, i: int) -> frozenset[int]:
        """The ancestors of concept ``i``, itself included."""
        out, todo = {i}, [i]
        while todo:
            for p in self.parents[todo.pop()]:
                if p not in out:
                    out.add(p)
                    todo.append(p)
        return frozenset(out)

    def independent_pairs(
        self, *, method: Literal["dag", "exact"] = "dag", atol: float = 1e-12
    ) -> Bool[Tensor, "concept concept"]:
        """``[i, j]`` True where concepts ``i != j`` are marginally independent.

        ``method="dag"``: d-separation given nothing (no common ancestor), any ``m``;
        ``"exact"``: ``|p(c_i=1, c_j=1) - p(c_i=1) p(c_j=1)| <= atol`` on the enumerated joint.
        """
        m = self.n_concepts
        if method == "dag":
            anc = [self.ancestors(i) for i in range(m)]
            out = torch.tensor([[not (anc[i] & anc[j]) for j in range(m)] for i in range(m)])
        elif method == "exact":
            p = self.joint()  # (2^m,)
            c = self.all_vectors().double()  # (2^m, m)
            p1 = p @ c  # (m,) marginals
            p11 = c.T @ (c * p[:, None])  # (m, m)
            out = (p11 - p1[:, None] * p1[None, :]).abs() <= atol
        else:
            raise ArgumentError(f"method must be 'dag' or 'exact', not {method!r}")
        out.fill_diagonal_(False)
        return out

    def independent_pair_list(
        self, *, method: Literal["dag", "exact"] = "dag"
    ) -> tuple[tuple[int, int], ...]:
        """The independent pairs ``(i, j)``, ``i < j`` (see ``independent_pairs``)."""
        ind = self.independent_pairs(method=method)
        return tuple((i, j) for i, j in ind.nonzero().tolist() if i < j)

    # --- probabilities ------------------------------------------------------------------

    def _check_enumerable(self, what: str) -> None:
        if self.n_concepts > MAX_ENUMERATE:
            raise OutOfRangeError(
                f"{what} enumerates all 2^{self.n_concepts} concept vectors; n_concepts must be "
                f"<= {MAX_ENUMERATE} for exact quantities (use sample() or a sampled vocabulary)"
            )

    def all_vectors(self) -> Int[Tensor, "vector concept"]:
        """Every concept vector, row ``k`` = the bits of ``k`` (concept 0 = lowest bit)."""
        self._check_enumerable("all_vectors")
        k = torch.arange(2**self.n_concepts)
        return (k[:, None] >> torch.arange(self.n_concepts)[None, :]) & 1

    def log_prob(self, c: Int[Tensor, "n concept"]) -> Float[Tensor, " n"]:
        """``log p(c)`` of each concept vector (exact, any ``m``)."""
        if c.ndim != 2 or c.shape[1] != self.n_concepts:
            raise ArgumentError(f"c must be (n, {self.n_concepts}), got {tuple(c.shape)}")
        out = torch.zeros(c.shape[0], dtype=torch.float64)
        for i, ps in enumerate(self.parents):
            k = torch.zeros(c.shape[0], dtype=torch.long)
            for b, p in enumerate(ps):
                k += c[:, p].long() << b
            p1 = self.theta[i][k]  # (n,)
            out += torch.where(c[:, i].bool(), p1, 1 - p1).log()
        return out

    def joint(self) -> Float[Tensor, " vector"]:
        """``p(c)`` of every concept vector in ``all_vectors()`` order (enumeration)."""
        return self.log_prob(self.all_vectors()).exp()

    def marginals(self) -> Float[Tensor, " concept"]:
        """``p(c_i = 1)`` for each concept, by enumeration."""
        return self.joint() @ self.all_vectors().double()

    def conditional(self, core: dict[int, int], *, query: int | None = None) -> Float[Tensor, ...]:
        """``p(c | core)`` over ``all_vectors()`` (or ``p(c_query = 1 | core)``), by enumeration."""
        p = self.joint()
        c = self.all_vectors()
        keep = torch.ones(len(p), dtype=torch.bool)
        for i, v in core.items():
            if not 0 <= i < self.n_concepts or v not in (0, 1):
                raise ArgumentError(
                    f"core {core!r}: keys are concepts 0..{self.n_concepts - 1}, values 0 or 1"
                )
            keep &= c[:, i] == v
        post = torch.where(keep, p, torch.zeros_like(p))
        post = post / post.sum()
        return post if query is None else post @ c[:, query].double()

    def sample(self, n: int, *, seed: int = 0) -> Int[Tensor, "n concept"]:
        """``n`` concept vectors by ancestral sampling (parents are sampled before children)."""
        if n < 1:
            raise OutOfRangeError(f"n={n} is out of range: it must be >= 1")
        gen = torch.Generator().manual_seed(seed)
        c = torch.zeros(n, self.n_concepts, dtype=torch.long)
        for i, ps in enumerate(self.parents):
            k = torch.zeros(n, dtype=torch.long)
            for b, p in enumerate(ps):
                k += c[:, p] << b
            c[:, i] = (torch.rand(n, generator=gen, dtype=torch.float64) < self.theta[i][k]).long()
        return c


@dataclass(frozen=True)
class TokenSet:
    """Vocabulary, contexts and the exact next-token law of one experiment (see module doc)."""

    tokens: Int[Tensor, "vocab concept"]  # concept vector of each token
    q: Float[Tensor, " vocab"]  # token law: p(c) restricted to the vocabulary
    contexts: Int[Tensor, "context concept"]  # 0 / 1 for core concepts, -1 unknown
    weight: Float[Tensor, " context"]  # probability of each context pattern (sums to 1)
    target: Float[Tensor, "context vocab"]  # Q[x, y] = q(y | core(x))
    train: Bool[Tensor, " context"]  # contexts seen in training

    @property
    def n_concepts(self) -> int:
        return int(self.tokens.shape[1])

    def entropy(self) -> float:
        """Expected conditional entropy on the training contexts: the minimum of the loss."""
        w = self.weight[self.train] / self.weight[self.train].sum()
        t = self.target[self.train]
        h = -(t * torch.where(t > 0, t.log(), torch.zeros_like(t))).sum(1)
        return float(w @ h)


def _unique_rows(x: Tensor) -> Tensor:
    return torch.unique(x, dim=0)


def _flip_one(rows: Tensor, allowed: Tensor, gen: torch.Generator) -> Tensor:
    """Each row with one random ``allowed`` column flipped (0 <-> 1); rows with none: as is."""
    score = torch.rand(rows.shape, generator=gen).masked_fill(~allowed, -1.0)
    col = score.argmax(1)  # (n,)
    out = rows.clone()
    has = allowed.any(1)
    r = has.nonzero().flatten()
    out[r, col[r]] = 1 - out[r, col[r]]
    return out


@checked
def build_tokens(
    lcm: LatentConceptModel,
    *,
    n_tokens: int | None = None,
    n_contexts: int | None = None,
    core_prob: float | int = 0.5,
    context_fraction: float | int = 1.0,
    token_fraction: float | int = 1.0,
    seed: int = 0,
) -> TokenSet:
    """The vocabulary, contexts and exact next-token law of an experiment on ``lcm``.

    ``n_tokens=None`` makes every concept vector a token (``m <= MAX_ENUMERATE``); otherwise
    half of ``n_tokens`` are distinct vectors sampled from ``lcm`` and half are copies of those
    with one random concept flipped, so that every concept has token pairs differing in it
    alone (for large ``m`` random vectors almost never do). ``n_contexts=None`` takes every
    pattern in ``{0, 1, unknown}^m`` that has a token (``m <= 9``); otherwise ``n_contexts``
    patterns are sampled, each with a partner whose one random core concept is flipped.
    ``context_fraction`` / ``token_fraction``: the robustness options.
    """
    _check_fraction("core_prob", core_prob)
    _check_fraction("context_fraction", context_fraction)
    _check_fraction("token_fraction", token_fraction)
    m = lcm.n_concepts
    gen = torch.Generator().manual_seed(seed)
    if n_tokens is None:
        tokens = lcm.all_vectors()
    else:
        if n_tokens < 2:
            raise OutOfRangeError(f"n_tokens={n_tokens} is out of range: it must be >= 2")
        base = _unique_rows(lcm.sample(4 * n_tokens, seed=seed + 1))
        base = base[torch.randperm(len(base), generator=gen)[: (n_tokens + 1) // 2]]
        tokens = _unique_rows(torch.cat([base, _flip_one(base, base >= 0, gen)]))[:n_tokens]
    if token_fraction < 1:  # incomplete concept set: drop concept vectors from the vocabulary
        keep = max(2, round(token_fraction * len(tokens)))
        tokens = tokens[torch.randperm(len(tokens), generator=gen)[:keep].sort().values]
    q = lcm.log_prob(tokens).exp()
    q = q / q.sum()  # (vocab,)
    if n_contexts is None:
        if m > 9:
            raise OutOfRangeError(
                f"all 3^{m} context patterns are too many (n_concepts must be <= 9): "
                "pass n_contexts= to sample them"
            )
        patterns = torch.tensor(list(itertools.product((-1, 0, 1), repeat=m)))
    else:
        if n_contexts < 1:
            raise OutOfRangeError(f"n_contexts={n_contexts} is out of range: it must be >= 1")
        idx = torch.multinomial(q, n_contexts, replacement=True, generator=gen)
        core = torch.rand(n_contexts, m, generator=gen) < core_prob
        patterns = torch.where(core, tokens[idx], -1)
        patterns = _unique_rows(torch.cat([patterns, _flip_one(patterns, core, gen)]))
    known = patterns >= 0  # (context, concept)
    agree = ((tokens[None, :, :] == patterns[:, None, :]) | ~known[:, None, :]).all(-1)
    mass = agree.double() @ q  # (context,) q(core values)
    patterns, agree, known, mass = (
        patterns[mass > 0],
        agree[mass > 0],
        known[mass > 0],
        mass[mass > 0],
    )
    if not len(patterns):
        raise EmptyInputError("no context pattern has a token in the vocabulary")
    k = known.sum(1).double()
    weight = mass * core_prob**k * (1 - core_prob) ** (m - k)
    weight = weight / weight.sum()
    target = agree.double() * q[None, :] / mass[:, None]  # (context, vocab)
    train = torch.ones(len(patterns), dtype=torch.bool)
    if context_fraction < 1:  # incomplete context set: only some patterns appear in training
        n_keep = max(1, round(context_fraction * len(patterns)))
        train = torch.zeros(len(patterns), dtype=torch.bool)
        train[torch.randperm(len(patterns), generator=gen)[:n_keep]] = True
    if len(tokens) < 2:
        raise EmptyInputError("the vocabulary has fewer than 2 tokens")
    return TokenSet(tokens, q, patterns, weight, target, train)
