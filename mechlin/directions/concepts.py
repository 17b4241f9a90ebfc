"""Linear concept directions in unembedding space (Park, Choe & Veitch 2024, ICML).

A language model scores the next token ``y`` as ``lambda(x)^T gamma(y)``: ``lambda`` is the
final hidden state the unembedding reads (after the final norm; TransformerLens's
``unembed.hook_in``), ``gamma(y)`` is row ``y`` of ``W_U.T``. A *concept* is given by
counterfactual token pairs (``king -> queen``, ``walk -> walked``, ``France -> Paris``). Park et
al. show that such concepts are directions once the unembedding is read with the *causal inner
product* ``<x, y>_C = x^T Cov(gamma)^-1 y`` (``Cov`` the population covariance of the
unembedding rows over the whole vocabulary): in the whitened coordinates
``g(y) = Cov^-1/2 (gamma(y) - mean gamma)`` (``Cov(g) = I``), a concept's direction is

    g_W = normalize(mean over pairs of g(y1) - g(y0)).

``concept_directions`` computes ``Cov`` in float64 (eigendecomposition ``eigh``), keeps the pairs
whose two words are single tokens (``" " + word``, the form inside running text) and reports the
pairs it drops with the reason. The result holds each direction three ways:

* ``directions`` / ``unit``: ``g_W`` in whitened coordinates, ``<g_W, g_W>_C = 1``; their inner
  products (``gram``) are causal inner products, which Park et al. find near 0 for causally
  separable concepts (LLaMA-2-7B: mean |off-diagonal| 0.046 causal vs 0.069 Euclidean).
* ``unembedding_vectors``: ``gamma_W = Cov^1/2 g_W`` in model coordinates, a probe:
  ``lambda(x) @ gamma_W`` reads the concept off a hidden state.
* ``embedding_vectors`` (``steering_vector(name)``): ``lambda_W = Cov^-1 gamma_W = Cov^-1/2 g_W``,
  the embedding (steering) representation, scaled so ``lambda_W @ gamma_W = 1``. Adding
  ``alpha * lambda_W`` to ``lambda(x)`` is Park's intervention ``l + alpha g_W`` in whitened
  coordinates (``l = Cov^1/2 lambda``): it changes the logit difference of a pair (y0, y1) by
  exactly ``alpha * g_W @ (g(y1) - g(y0))`` (see ``mechlin.directions.steering``).

``inner_product="euclidean"`` is the baseline Park et al. compare with: the same mean differences
of the raw ``gamma`` rows, normalized in the Euclidean norm (whitening = identity).

Pitfalls: the causal inner product is only defined up to the choice of ``Cov`` (Park's is the
vocabulary covariance used here); a concept with few single-token pairs has a noisy direction
(look at ``counts`` and the linearity test in ``mechlin.directions.measures``); pairs of different
senses (``"may"``) blur a concept. The shipped pair lists (``load_concepts``; 29 concepts in
``mechlin/datasets/data/concepts.json``, sources in ``mechlin/datasets/data/README.md``)
follow Park's categories.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechlin import sites, viz
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.datasets.concept_pairs import Concept, load_concepts, shipped_concepts
from mechlin.errors import (
    ArgumentError,
    ArgumentTypeError,
    ConceptPairError,
    EmptyInputError,
    NotInResultError,
    TooFewPairsError,
)
from mechlin.results import Result
from mechlin.tokens import answer_tokens

InnerProduct = Literal["causal", "euclidean"]
Word = str | int  # a word (encoded as " " + word) or a token id
Pairs = Sequence[tuple[Word, Word]] | Sequence[Sequence[Word]]


@dataclass(frozen=True)
class ConceptDirections(Result):
    """Unit directions of concepts in unembedding space, with the whitening that defines them."""

    names: tuple[str, ...]
    unit: Float[Tensor, "concept d_model"]  # g_W, unit norm, whitened (or raw for euclidean)
    inner_product: str  # "causal" | "euclidean"
    gamma_mean: Float[Tensor, " d_model"]  # mean unembedding row (float64)
    cov_sqrt: Float[Tensor, "d_model d_model"]  # Cov^1/2 (identity for euclidean)
    cov_inv_sqrt: Float[Tensor, "d_model d_model"]  # Cov^-1/2 (identity for euclidean)
    pair_ids: Int[Tensor, "pair 2"]  # kept (base, target) token ids, every concept
    pair_concept: Int[Tensor, " pair"]  # index into ``names`` of each kept pair
    pair_words: tuple[tuple[str, str], ...]  # the kept pairs as given
    dropped: tuple[tuple[str, str, str, str], ...]  # (concept, base, target, reason)
    d_vocab: int
    skipped: tuple[str, ...] = ()  # concepts left out: fewer than 2 usable pairs

    def __post_init__(self) -> None:
        n, d = self.unit.shape
        if n != len(self.names):
            raise ArgumentError(f"unit has {n} rows for {len(self.names)} concept names")
        for m in (self.cov_sqrt, self.cov_inv_sqrt):
            if tuple(m.shape) != (d, d):
                raise ArgumentError(f"whitening matrices must be ({d}, {d}), got {tuple(m.shape)}")
        if not len(self.pair_ids) == len(self.pair_concept) == len(self.pair_words):
            raise ArgumentError("pair_ids, pair_concept and pair_words differ in length")
        if not torch.allclose(self.unit.norm(dim=-1), torch.ones(n, dtype=self.unit.dtype)):
            raise ArgumentError("concept directions must have unit norm")

    @property
    def directions(self) -> dict[str, Float[Tensor, " d_model"]]:
        """Concept name -> unit direction (whitened coordinates for the causal inner product)."""
        return dict(zip(self.names, self.unit, strict=True))

    @property
    def gram(self) -> Float[Tensor, "concept concept"]:
        """Inner products of the directions (causal or Euclidean); 1 on the diagonal."""
        return self.unit @ self.unit.T

    @property
    def unembedding_vectors(self) -> Float[Tensor, "concept d_model"]:
        """``gamma_W = Cov^1/2 g_W`` (model coordinates): ``lambda @ gamma_W`` reads a concept."""
        return self.unit @ self.cov_sqrt

    @property
    def embedding_vectors(self) -> Float[Tensor, "concept d_model"]:
        """``lambda_W = Cov^-1/2 g_W`` (model coordinates): steering vectors, see ``steer``."""
        return self.unit @ self.cov_inv_sqrt

    def index(self, name: str) -> int:
        if name not in self.names:
            raise NotInResultError(f"no concept {name!r} here; concepts: {list(self.names)}")
        return self.names.index(name)

    def steering_vector(self, name: str) -> Float[Tensor, " d_model"]:
        """The embedding representation of ``name``: add ``alpha *`` it to ``lambda(x)``."""
        return self.embedding_vectors[self.index(name)]

    def pairs(self, name: str) -> Int[Tensor, "n 2"]:
        """Token ids (base, target) of the kept pairs of ``name``."""
        return self.pair_ids[self.pair_concept == self.index(name)]

    @property
    def counts(self) -> dict[str, tuple[int, int]]:
        """Concept -> (kept pairs, dropped pairs)."""
        kept = torch.bincount(self.pair_concept, minlength=len(self.names)).tolist()
        dropped = [sum(d[0] == n for d in self.dropped) for n in self.names]
        return {n: (k, x) for n, k, x in zip(self.names, kept, dropped, strict=True)}

    def whiten(self, gamma: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """Unembedding rows in the coordinates of ``unit``: ``(gamma - mean) Cov^-1/2``."""
        return (gamma.to(self.gamma_mean) - self.gamma_mean) @ self.cov_inv_sqrt

    def to_frame(self) -> Any:
        """One row per pair given: concept, base, target, kept, reason for dropping."""
        import pandas as pd  # noqa: PLC0415

        rows = [
            {"concept": self.names[c], "base": b, "target": t, "kept": True, "reason": ""}
            for c, (b, t) in zip(self.pair_concept.tolist(), self.pair_words, strict=True)
        ]
        rows += [
            {"concept": c, "base": b, "target": t, "kept": False, "reason": r}
            for c, b, t, r in self.dropped
        ]
        return pd.DataFrame(rows)

    def summary(self) -> str:
        lines = [f"{len(self.names)} concepts ({self.inner_product} inner product):"]
        for name, (kept, dropped) in self.counts.items():
            lines.append(f"  {name:24s} {kept:3d} pairs kept, {dropped:3d} dropped")
        if self.skipped:
            lines.append(f"  skipped (fewer than 2 single-token pairs): {', '.join(self.skipped)}")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Heatmap of |inner product| between the concept directions; returns the figure."""
        return viz.gram_heatmap(self.gram, self.names, title=f"{self.inner_product} |<.,.>|", ax=ax)


def _gamma_mean(w_u: Tensor, chunk: int = 16384) -> Tensor:
    """Mean unembedding row in float64, summed in chunks of vocabulary columns."""
    total = torch.zeros(w_u.shape[0], dtype=torch.float64)
    for s in range(0, w_u.shape[1], chunk):
        total += w_u[:, s : s + chunk].double().sum(1).cpu()
    return total / w_u.shape[1]


@torch.no_grad()
def unembedding_whitening(
    model: Model, *, chunk: int = 16384
) -> tuple[
    Float[Tensor, " d_model"], Float[Tensor, "d_model d_model"], Float[Tensor, "d_model d_model"]
]:
    """Mean unembedding row, ``Cov^1/2`` and ``Cov^-1/2`` over the whole vocabulary (float64).

    ``Cov`` is the population covariance of the rows of ``W_U.T``, accumulated in float64 in
    chunks of ``chunk`` rows (a 262k vocabulary never sits in memory twice), then ``eigh``.
    """
    w_u = sites.unembedding_matrix(model)  # (d_model, d_vocab)
    d, n = w_u.shape
    mean = _gamma_mean(w_u, chunk)
    cov = torch.zeros(d, d, dtype=torch.float64)
    for s in range(0, n, chunk):
        rows = w_u[:, s : s + chunk].T.double().cpu() - mean  # (chunk, d_model)
        cov += rows.T @ rows
    cov /= n
    evals, evecs = torch.linalg.eigh(cov)
    if evals[0] <= evals[-1] * 1e-12:
        raise ArgumentError(
            f"the unembedding covariance is singular (smallest eigenvalue {evals[0]:.3g}): "
            "the causal inner product needs d_vocab > d_model and full-rank W_U; "
            "use inner_product='euclidean'"
        )
    sqrt = (evecs * evals.sqrt()) @ evecs.T
    inv_sqrt = (evecs * evals.rsqrt()) @ evecs.T
    return mean, sqrt, inv_sqrt


def _token(model: Model, word: Word, d_vocab: int) -> tuple[int | None, str]:
    """The token id of ``word`` (``" " + word`` as one token), or None and the reason."""
    if isinstance(word, int):
        if not 0 <= word < d_vocab:
            raise ConceptPairError(f"token id {word} is out of range: the vocabulary has {d_vocab}")
        return word, ""
    if not word.strip():
        return None, "empty word"
    ids = answer_tokens(model, word)  # " " + word, as the word follows a prompt
    if len(ids) == 1:
        return int(ids[0]), ""
    pieces = [model.tokenizer.decode([i]) for i in ids]
    return None, f"{word!r} is not one token: ' {word}' -> {pieces}"


def _resolve(
    model: Model, name: str, pairs: Pairs, d_vocab: int
) -> tuple[list[tuple[int, int]], list[tuple[str, str]], list[tuple[str, str, str, str]]]:
    kept: list[tuple[int, int]] = []
    words: list[tuple[str, str]] = []
    dropped: list[tuple[str, str, str, str]] = []
    for pair in pairs:
        if len(pair) != 2:
            raise ConceptPairError(f"concept {name!r}: a pair must be (base, target), got {pair!r}")
        base, target = pair
        (i0, r0), (i1, r1) = _token(model, base, d_vocab), _token(model, target, d_vocab)
        reason = "; ".join(r for r in (r0, r1) if r)
        if not reason and i0 == i1:
            reason = "base and target are the same token"
        if not reason and (i0, i1) in kept:
            reason = "duplicate of an earlier pair"
        if reason:
            dropped.append((name, str(base), str(target), reason))
        else:
            assert i0 is not None and i1 is not None
            kept.append((i0, i1))
            words.append((str(base), str(target)))
    if len(kept) < 2:
        shown = "\n".join(f"  {b} -> {t}: {r}" for _, b, t, r in dropped[:10])
        raise TooFewPairsError(
            dropped,
            f"concept {name!r} has {len(kept)} usable pair(s) for this tokenizer; a direction "
            f"needs at least 2. {len(dropped)} of {len(pairs)} pairs were dropped:\n{shown}\n"
            "Pass words that are single tokens with a leading space (or token ids), drop this "
            "concept, or pass too_few='skip' to leave out (and report) such concepts.",
        )
    return kept, words, dropped


def _as_mapping(concepts: Mapping[str, Pairs] | Sequence[str] | None) -> dict[str, Pairs]:
    if concepts is None:
        return {n: c.pairs for n, c in shipped_concepts().items()}
    if isinstance(concepts, Mapping):
        out = {n: (p.pairs if isinstance(p, Concept) else p) for n, p in concepts.items()}
    else:
        if isinstance(concepts, str):
            raise ArgumentTypeError(f"pass a list of concept names, not the string {concepts!r}")
        out = {n: c.pairs for n, c in load_concepts(list(concepts)).items()}
    if not out:
        raise EmptyInputError(
            "no concepts given: pass {name: [(base, target), ...]}, names of shipped concepts "
            "(mechlin.directions.concepts.load_concepts()), or None for all of them"
        )
    return out


@checked
@torch.no_grad()
def concept_directions(
    model: Model,
    concepts: Mapping[str, Pairs] | Sequence[str] | None = None,
    *,
    inner_product: InnerProduct = "causal",
    too_few: Literal["error", "skip"] = "error",
) -> ConceptDirections:
    """Unit directions of concepts given by counterfactual pairs, in unembedding space.

    Args:
        model: a model with ``W_U`` (d_model, d_vocab), ``cfg`` and a tokenizer.
        concepts: ``{name: [(base, target), ...]}`` (words or token ids), names of shipped
            concepts, or None for every shipped concept (``load_concepts``).
        inner_product: ``"causal"`` (whitened by ``Cov(gamma)``, Park et al.) or
            ``"euclidean"`` (the raw unembedding, the baseline).
        too_few: what to do with a concept left with fewer than 2 single-token pairs:
            ``"error"`` raises; ``"skip"`` leaves it out, names it in ``skipped`` and keeps
            its pairs in ``dropped`` (useful with the shipped lists on an English-only
            tokenizer, where most German or Spanish words are several tokens).

    Raises:
        ConceptPairError: a concept keeps fewer than 2 pairs (the message lists the dropped
            pairs and why), a token id is out of range, or a shipped name is unknown.
    """
    mapping = _as_mapping(concepts)
    w_u = sites.unembedding_matrix(model)
    d_model, d_vocab = w_u.shape
    pair_ids: list[tuple[int, int]] = []
    pair_concept: list[int] = []
    pair_words: list[tuple[str, str]] = []
    dropped: list[tuple[str, str, str, str]] = []
    names: list[str] = []
    skipped: list[str] = []
    for name, pairs in mapping.items():
        try:
            kept, words, lost = _resolve(model, name, pairs, d_vocab)
        except TooFewPairsError as error:
            if too_few == "error":
                raise
            skipped.append(name)
            dropped += error.dropped
            continue
        c = len(names)
        names.append(name)
        pair_ids += kept
        pair_words += words
        pair_concept += [c] * len(kept)
        dropped += lost
    if not names:
        raise ConceptPairError(
            f"none of the {len(mapping)} concepts has 2 single-token pairs for this tokenizer: "
            f"{list(mapping)}"
        )
    if inner_product == "causal":
        mean, sqrt, inv_sqrt = unembedding_whitening(model)
    else:
        mean = _gamma_mean(w_u)
        sqrt = inv_sqrt = torch.eye(d_model, dtype=torch.float64)
    ids = torch.tensor(pair_ids)  # (pair, 2)
    which = torch.tensor(pair_concept)  # (pair,)
    gamma = w_u[:, ids.flatten()].T.double().cpu().reshape(len(ids), 2, d_model)
    diffs = (gamma[:, 1] - gamma[:, 0]) @ inv_sqrt  # (pair, d_model) whitened differences
    sums = torch.zeros(len(names), d_model, dtype=torch.float64).index_add_(0, which, diffs)
    norms = sums.norm(dim=-1, keepdim=True)  # (concept, 1)
    if (norms == 0).any():
        zero = [n for n, z in zip(names, (norms == 0).flatten().tolist(), strict=True) if z]
        raise ConceptPairError(f"the pair differences of {zero} sum to zero: no direction")
    unit = sums / norms  # (concept, d_model): normalize(mean difference)
    return ConceptDirections(
        names=tuple(names),
        unit=unit,
        inner_product=inner_product,
        gamma_mean=mean,
        cov_sqrt=sqrt,
        cov_inv_sqrt=inv_sqrt,
        pair_ids=ids,
        pair_concept=which,
        pair_words=tuple(pair_words),
        dropped=tuple(dropped),
        d_vocab=int(d_vocab),
        skipped=tuple(skipped),
    )
