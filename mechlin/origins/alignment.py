"""Does a concept's direction among hidden states align with its unembedding direction?

Jiang et al. (2024) predict that, in a model trained by next-token prediction, the direction
that separates contexts by a concept in the space of final hidden states ``lambda(x)`` (the
context representation ``f`` of the latent-concept model) is aligned with the concept's
direction in unembedding space (``g``), and unrelated concepts' directions are nearly
orthogonal. ``embedding_unembedding_alignment`` measures this on a real model:

* the unembedding direction of each concept is Park et al.'s ``g_W``
  (``mechlin.directions.concept_directions``: normalized mean of the whitened differences
  ``g(y1) - g(y0)`` over its counterfactual word pairs);
* the context direction of a concept is ``mean lambda(x1) - mean lambda(x0)`` over two sets of
  contexts, those whose next word is of the target kind vs of the base kind; ``lambda(x)`` is
  the input of the unembedding at the last token (``unembed.hook_in``: after the final norm,
  what pairs with ``W_U``), read with ``mechlin.neurons.collect_activations(pooling="last")``;
* with the causal inner product (the default, as Park's directions use it) hidden states are
  mapped to whitened coordinates ``l = Cov^1/2 lambda`` (since ``lambda . gamma = l . g`` up to
  a constant per context), and the number reported is the Euclidean cosine in those
  coordinates, i.e. the causal cosine; ``inner_product="euclidean"`` uses raw ``lambda`` and
  raw ``gamma`` differences.

The result is a matrix: rows are the concepts with contexts, columns the concepts with
unembedding directions; matched cells (same concept) should exceed mismatched ones. Both
bundled models (SmolLM2-135M, Gemma-3-270M) tie the input embedding to the unembedding, so an
"embedding vs unembedding" check on the embedding *matrix* is trivially 1; this check uses the
final hidden states instead. The contexts are built so the concept's words never sit at the
last position (``word_contexts``: a repetition template ``"Word: {w}. Word: {w}. Word:"`` whose
next word is ``w``; ``language_contexts``: the first words of English vs French Europarl
sentences), so ``lambda(x)`` does not simply contain the word's own (tied) embedding.

Statistics (the procedures are ours; defaults ``n_permutations=1000``, ``n_bootstrap=1000``,
``seed=0``; float64, from the activations of one forward pass over the contexts, never rerun):

* *Permutation baseline*: the matched mean (mean cosine over matched cells) recomputed with the
  unembedding-concept labels permuted uniformly at random among the columns, i.e. each context
  concept matched with the unembedding direction of a random concept (its own too, when the
  permutation fixes it). One-sided p-value ``(1 + #{permuted >= observed}) / (1 +
  n_permutations)``; permuted means within ``TIE_TOLERANCE`` of the observed one count as
  ties (>=), so the count does not depend on the order of summation. With ``C`` columns there
  are only ``C!`` permutations: with 3 concepts the p-value cannot fall much below 1/6.
* *Bootstrap intervals*: 95% *basic* (bias-corrected) intervals ``(2 est - q97.5, 2 est -
  q2.5)`` from the resampled statistic's quantiles (``torch.quantile``, linear
  interpolation), of every cell's cosine, of the matched mean and of the mismatched mean
  |cosine| (the pitfall below is why not the percentile interval). Each of
  ``n_bootstrap`` resamples draws, with replacement, each row's base contexts and, apart,
  its target contexts, and each column concept's word pairs, and recomputes both directions
  (the unembedding direction from the resampled pairs' whitened differences, as
  ``concept_directions`` computes it from all of them).
* Randomness: one ``torch.Generator`` seeded with ``seed`` draws, in this order, the
  permutations (one ``torch.randperm(C)`` each), then ``torch.randint`` indices of shape
  ``(n_bootstrap, n)``: each row's base contexts, each row's target contexts, each column's
  pairs. The same seed and inputs give the same numbers.

Pitfalls of the statistics. A sample mean difference carries noise in all ``d_model``
dimensions, which shrinks its cosine with any fixed direction; resampling adds that noise a
second time, so the resampled matched cosines sit *below* the observed ones, and a percentile
interval misses its own point estimate (SmolLM2-135M, causal, the defaults: matched mean
0.513, percentile interval [0.437, 0.459], bootstrap bias -0.064; 20 of 28 matched cosines
outside their own percentile interval). The basic interval reflects that spread around the
estimate, so the bias moves it *up*: it estimates the cosine of the population directions,
which the observed cosine understates (to first order by about the bias).
``matched_mean_bias`` reports the shift and ``summary`` says how many matched cosines lie
outside their interval (a strongly skewed resampling distribution can still do it).
``word_contexts`` builds base and target contexts from the same pairs, so the two sets are
paired; resampling them apart ignores that, and the pairs behind the unembedding direction
are resampled apart from the contexts built from them. The permutation null treats the
unembedding directions as exchangeable labels; related concepts (``verb -> Ved`` and
``Ving -> Ved``) share structure, which tends to raise the permuted means (a conservative
test).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechlin import sites, viz
from mechlin._checks import checked
from mechlin._store import atomic_write
from mechlin._types import Model
from mechlin.datasets.features import language_identity
from mechlin.directions import ConceptDirections, concept_directions
from mechlin.errors import (
    ArgumentError,
    EmptyInputError,
    MissingHookError,
    NotSupportedError,
)
from mechlin.models import load_model
from mechlin.neurons import collect_activations
from mechlin.results import Result

LAMBDA_HOOK = "unembed.hook_in"  # the final hidden state the unembedding reads
WORD_TEMPLATES: tuple[str, ...] = ("Word: {w}. Word: {w}. Word:", "I said {w}, and again I said")
Contexts = Mapping[str, tuple[Sequence[str], Sequence[str]]]
LEVEL = 0.95  # of the bootstrap intervals and of the permutation quantiles
# Permuted matched means this close to the observed one count as ties (>=): float64 means of at
# most thousands of cosines in [-1, 1] agree to ~1e-13 whatever the order of summation.
TIE_TOLERANCE = 1e-12
_BOOTSTRAP_CHUNK = 100  # resamples held in memory at once: (chunk, concept, d_model) float64


@dataclass(frozen=True)
class EmbeddingUnembeddingAlignment(Result):
    """Cosines between concepts' context directions (rows) and unembedding directions (cols),
    with bootstrap intervals and a permutation baseline of the matched mean.

    The statistics fields are ``None`` in files saved before they existed (``summary`` and
    ``to_frame`` then leave them out; their properties raise ``NotSupportedError``)."""

    context_concepts: tuple[str, ...]
    unembed_concepts: tuple[str, ...]
    alignment: Float[Tensor, "row col"]  # cosine under ``inner_product``
    matched: Bool[Tensor, "row col"]  # same concept
    n_contexts: Int[Tensor, "row 2"]  # (base, target) contexts of each row
    inner_product: str
    model_name: str
    # 95% basic bootstrap interval (low, high) of every cell's cosine
    alignment_interval: Float[Tensor, "2 row col"] | None = None
    bootstrap_matched_means: Float[Tensor, " bootstrap"] | None = None  # matched mean, each
    # resample; the mismatched mean |cosine| of each resample (NaN without mismatched cells)
    bootstrap_mismatched_mean_abs: Float[Tensor, " bootstrap"] | None = None
    # the matched mean under each random permutation of the columns' concept labels
    permuted_matched_means: Float[Tensor, " permutation"] | None = None
    seed: int | None = None

    _nonfinite: ClassVar[frozenset[str]] = frozenset({"bootstrap_mismatched_mean_abs"})

    def __post_init__(self) -> None:
        shape = (len(self.context_concepts), len(self.unembed_concepts))
        if self.alignment.shape != shape or self.matched.shape != shape:
            raise ArgumentError(f"alignment and matched must be {shape}")
        if self.n_contexts.shape != (shape[0], 2):
            raise ArgumentError(f"n_contexts must be ({shape[0]}, 2)")
        interval = self.alignment_interval
        if interval is not None and tuple(interval.shape) != (2, *shape):
            raise ArgumentError(f"alignment_interval must be (2, {shape[0]}, {shape[1]})")
        if interval is not None and bool((interval[0] > interval[1]).any()):
            raise ArgumentError("alignment_interval must hold (low, high) with low <= high")
        boot = (self.bootstrap_matched_means, self.bootstrap_mismatched_mean_abs)
        if any(b is not None and len(b) == 0 for b in boot):
            raise ArgumentError("the bootstrap fields must hold at least one resample")
        perm = self.permuted_matched_means
        if perm is not None and len(perm) == 0:
            raise ArgumentError("permuted_matched_means must hold at least one permutation")

    @property
    def matched_values(self) -> Float[Tensor, " matched"]:
        return self.alignment[self.matched]

    @property
    def mismatched_values(self) -> Float[Tensor, " mismatched"]:
        return self.alignment[~self.matched]

    @property
    def matched_mean(self) -> float:
        """Mean cosine of a concept's context direction with its own unembedding direction."""
        return float(self.matched_values.mean())

    @property
    def mismatched_mean_abs(self) -> float:
        """Mean |cosine| of context directions with other concepts' unembedding directions."""
        values = self.mismatched_values
        return float(values.abs().mean()) if len(values) else float("nan")

    @property
    def fraction_matched_wins(self) -> float:
        """Share of rows whose matched cosine exceeds every mismatched |cosine| in that row."""
        wins = []
        for r in range(len(self.context_concepts)):
            own = self.alignment[r][self.matched[r]]
            other = self.alignment[r][~self.matched[r]].abs()
            if len(own):
                wins.append(bool(len(other) == 0 or own.max() > other.max()))
        return sum(wins) / len(wins)

    @property
    def has_statistics(self) -> bool:
        """Whether the bootstrap and permutation fields were measured (older files: no)."""
        return (
            self.alignment_interval is not None
            and self.bootstrap_matched_means is not None
            and self.bootstrap_mismatched_mean_abs is not None
            and self.permuted_matched_means is not None
        )

    def _measured(self, value: Tensor | None) -> Tensor:
        if value is None:
            raise NotSupportedError(
                "this result was saved without the bootstrap and permutation statistics: "
                "rerun embedding_unembedding_alignment to measure them"
            )
        return value

    @property
    def n_bootstrap(self) -> int:
        return len(self._measured(self.bootstrap_matched_means))

    @property
    def n_permutations(self) -> int:
        return len(self._measured(self.permuted_matched_means))

    @property
    def matched_mean_interval(self) -> tuple[float, float]:
        """95% basic (bias-corrected) bootstrap interval of the matched mean."""
        return _basic(self.matched_mean, self._measured(self.bootstrap_matched_means))

    @property
    def mismatched_mean_abs_interval(self) -> tuple[float, float]:
        """95% basic bootstrap interval of the mismatched mean |cosine| (NaN: none)."""
        return _basic(self.mismatched_mean_abs, self._measured(self.bootstrap_mismatched_mean_abs))

    @property
    def matched_mean_bias(self) -> float:
        """Mean of the resampled matched means minus the observed one: the bootstrap estimate
        of the bias of the matched mean (negative: finite samples make cosines smaller)."""
        return float(self._measured(self.bootstrap_matched_means).mean()) - self.matched_mean

    @property
    def permutation_mean(self) -> float:
        """Mean of the matched mean over the random column permutations (the baseline)."""
        return float(self._measured(self.permuted_matched_means).mean())

    @property
    def permutation_interval(self) -> tuple[float, float]:
        """The 2.5% and 97.5% quantiles of the permuted matched means."""
        return _quantiles(self._measured(self.permuted_matched_means))

    @property
    def p_value(self) -> float:
        """One-sided permutation p-value ``(1 + #{permuted >= observed}) / (1 + n)``."""
        perm = self._measured(self.permuted_matched_means)
        hits = int((perm >= self.matched_mean - TIE_TOLERANCE).sum())
        return (1 + hits) / (1 + len(perm))

    def statistics(self) -> dict[str, Any]:
        """The headline numbers as plain Python values (JSON-ready); intervals are [low, high]."""
        out: dict[str, Any] = {
            "model": self.model_name,
            "inner_product": self.inner_product,
            "n_concepts": int(self.matched.any(1).sum()),  # rows with a matched column
            "n_rows": len(self.context_concepts),
            "n_columns": len(self.unembed_concepts),
            "matched_mean": self.matched_mean,
            "mismatched_mean_abs": self.mismatched_mean_abs,
            "fraction_matched_wins": self.fraction_matched_wins,
        }
        if self.has_statistics:
            assert self.alignment_interval is not None
            lo, hi = self.alignment_interval[0], self.alignment_interval[1]
            outside = self.matched & ((self.alignment < lo) | (self.alignment > hi))
            out |= {
                "matched_cosines": {
                    self.context_concepts[r]: {
                        "cosine": float(self.alignment[r, c]),
                        "interval": [float(lo[r, c]), float(hi[r, c])],
                    }
                    for r, c in self.matched.nonzero().tolist()
                },
                "matched_mean_interval": list(self.matched_mean_interval),
                "matched_mean_bootstrap_bias": self.matched_mean_bias,
                "matched_outside_own_interval": int(outside.sum()),
                "mismatched_mean_abs_interval": list(self.mismatched_mean_abs_interval),
                "permutation_mean": self.permutation_mean,
                "permutation_interval": list(self.permutation_interval),
                "p_value": self.p_value,
                "n_permutations": self.n_permutations,
                "n_bootstrap": self.n_bootstrap,
                "seed": self.seed,
                "level": LEVEL,
            }
        return out

    def summary(self) -> str:
        lines = [
            f"{self.model_name}: {len(self.context_concepts)} concepts' context directions "
            f"(lambda at the last token) vs {len(self.unembed_concepts)} unembedding "
            "directions, "
            f"{self.inner_product} inner product",
            f"matched cosine {self.matched_mean:.3f} (mean); mismatched |cosine| "
            f"{self.mismatched_mean_abs:.3f} (mean); matched beats every mismatch in "
            f"{self.fraction_matched_wins:.0%} of rows",
        ]
        if not self.has_statistics:
            return "\n".join(lines)
        stats = self.statistics()
        (m_lo, m_hi), (x_lo, x_hi) = self.matched_mean_interval, self.mismatched_mean_abs_interval
        p_lo, p_hi = self.permutation_interval
        lines += [
            f"{LEVEL:.0%} basic bootstrap ({self.n_bootstrap} resamples of contexts and "
            f"pairs): matched mean [{m_lo:.3f}, {m_hi:.3f}] (bootstrap bias "
            f"{self.matched_mean_bias:+.3f}), mismatched mean |cosine| [{x_lo:.3f}, {x_hi:.3f}]",
            f"permutation baseline of the matched mean ({self.n_permutations} permutations of "
            f"the columns' concepts): mean {self.permutation_mean:.3f}, {LEVEL:.0%} "
            f"[{p_lo:.3f}, {p_hi:.3f}]; one-sided p = {self.p_value:.3g}",
        ]
        if stats["matched_outside_own_interval"]:
            lines.append(
                f"{stats['matched_outside_own_interval']} of {int(self.matched.sum())} matched "
                "cosines lie outside their own bootstrap interval: noise from finite contexts "
                "and pairs biases cosines towards 0 in high dimension, and the basic interval, "
                "corrected for that bias, estimates the population directions' cosine"
            )
        return "\n".join(lines)

    def to_frame(self) -> Any:
        """One row per (context concept, unembedding concept) cell, with its bootstrap interval
        (``cosine_low``, ``cosine_high``; NaN in files saved without it); ``frame.attrs`` holds
        ``statistics()``."""
        import pandas as pd  # noqa: PLC0415

        nan = float("nan")
        interval = self.alignment_interval
        frame = pd.DataFrame(
            [
                {
                    "context_concept": a,
                    "unembed_concept": b,
                    "cosine": float(self.alignment[i, j]),
                    "cosine_low": nan if interval is None else float(interval[0, i, j]),
                    "cosine_high": nan if interval is None else float(interval[1, i, j]),
                    "matched": bool(self.matched[i, j]),
                }
                for i, a in enumerate(self.context_concepts)
                for j, b in enumerate(self.unembed_concepts)
            ]
        )
        frame.attrs.update(self.statistics())
        return frame

    def plot(self, ax: Any = None) -> Any:
        """Heatmap of the cosines, matched cells outlined, the matched mean against its
        permutation baseline in the title; returns the figure."""
        r, c = self.alignment.shape
        fig, ax = viz.axes(ax, figsize=(0.45 * c + 3, 0.4 * r + 2))
        img = ax.imshow(self.alignment.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        for i, j in self.matched.nonzero().tolist():
            ax.add_patch(_rect(j, i))
        ax.set_xticks(range(c))
        ax.set_xticklabels(self.unembed_concepts, rotation=90, fontsize=7)
        ax.set_yticks(range(r))
        ax.set_yticklabels(self.context_concepts, fontsize=7)
        ax.set_xlabel("unembedding direction")
        ax.set_ylabel("context direction")
        title = f"{self.inner_product} cosine (matched outlined)"
        if self.has_statistics:
            m_lo, m_hi = self.matched_mean_interval
            p_lo, p_hi = self.permutation_interval
            title += (
                f"\nmatched mean {self.matched_mean:.2f} [{m_lo:.2f}, {m_hi:.2f}]; "
                f"permuted {self.permutation_mean:.2f} [{p_lo:.2f}, {p_hi:.2f}], "
                f"p = {self.p_value:.2g}"
            )
        ax.set_title(title, fontsize=9)
        fig.colorbar(img, ax=ax, fraction=0.046)
        return fig


def _basic_interval(estimate: Tensor, quantiles: Tensor) -> Tensor:
    """The basic (bias-corrected) bootstrap interval ``(2 est - q_hi, 2 est - q_lo)``, stacked
    as (low, high) like ``quantiles``: the resampled statistic's spread around the estimate,
    reflected, so a resampling bias moves the interval the other way (module doc)."""
    return torch.stack([2 * estimate - quantiles[1], 2 * estimate - quantiles[0]])


def _basic(estimate: float, values: Tensor) -> tuple[float, float]:
    lo, hi = _quantiles(values)
    return (2 * estimate - hi, 2 * estimate - lo)


def _quantiles(values: Tensor) -> tuple[float, float]:
    """The (1 - LEVEL) / 2 and (1 + LEVEL) / 2 quantiles (linear interpolation)."""
    q = torch.tensor([(1 - LEVEL) / 2, (1 + LEVEL) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(values.double(), q).tolist()
    return (lo, hi)


def _rect(x: int, y: int) -> Any:
    from matplotlib.patches import Rectangle  # noqa: PLC0415

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="k", linewidth=1.5)


@checked
def word_contexts(
    pairs: Sequence[tuple[str, str]], *, templates: Sequence[str] = WORD_TEMPLATES
) -> tuple[list[str], list[str]]:
    """(base contexts, target contexts): each template with ``{w}`` the base / target word."""
    if not pairs:
        raise EmptyInputError("no word pairs given: pass [(base, target), ...]")
    if not templates or any("{w}" not in t for t in templates):
        raise ArgumentError(f"templates must be non-empty and contain '{{w}}': {templates!r}")
    base = [t.format(w=b) for b, _ in pairs for t in templates]
    target = [t.format(w=w) for _, w in pairs for t in templates]
    return base, target


@checked
def language_contexts(
    *, base: str = "en", target: str = "fr", n: int = 40, n_words: int = 8
) -> tuple[list[str], list[str]]:
    """The first ``n_words`` words of ``n`` Europarl sentences in each of two languages."""
    ds = language_identity(n_per_language=n, languages=(base, target))
    texts = [" ".join(t.split()[:n_words]) for t in ds.texts]
    labels = ds.labels.tolist()
    return (
        [t for t, y in zip(texts, labels, strict=True) if y == 0],
        [t for t, y in zip(texts, labels, strict=True) if y == 1],
    )


@checked
def default_contexts(
    directions: ConceptDirections, *, max_pairs: int = 20, n_language: int = 40
) -> dict[str, tuple[list[str], list[str]]]:
    """Contexts for every concept of ``directions``: Europarl for ``"English -> French"``,
    ``word_contexts`` of (up to ``max_pairs``) kept pairs for the others."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for c, name in enumerate(directions.names):
        if name == "English -> French":
            out[name] = language_contexts(n=n_language)
            continue
        pairs = [
            p
            for p, k in zip(directions.pair_words, directions.pair_concept.tolist(), strict=True)
            if k == c
        ]
        out[name] = word_contexts(pairs[:max_pairs])
    return out


@checked
def embedding_unembedding_alignment(
    model: Model,
    concepts: ConceptDirections | Mapping[str, Any] | Sequence[str],
    contexts: Contexts | None = None,
    *,
    inner_product: Literal["causal", "euclidean"] = "causal",
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> EmbeddingUnembeddingAlignment:
    """Cosines of concepts' context directions (final hidden states) with unembedding ones,
    with a permutation baseline and bootstrap intervals (see the module docstring).

    Args:
        model: a hooked model with ``unembed.hook_in``, ``W_U`` and a tokenizer.
        concepts: a ``ConceptDirections`` computed on ``model`` (its inner product is used),
            or what ``concept_directions`` takes (pair mappings or shipped names; concepts
            without 2 single-token pairs are skipped).
        contexts: ``{concept: (base contexts, target contexts)}``: texts whose next word is of
            the base kind vs of the target kind; ``None``: ``default_contexts``.
        inner_product: for ``concepts`` given by name or pairs: ``"causal"`` or
            ``"euclidean"``.
        n_permutations: random permutations of the columns' concept labels for the baseline.
        n_bootstrap: resamples (of each row's contexts and each column's pairs) per interval.
        seed: of the one generator that draws the permutations (first, one
            ``torch.randperm`` each) and then the bootstrap indices; same seed, same numbers.
    """
    dirs = _directions(model, concepts, inner_product)
    if contexts is None:
        contexts = default_contexts(dirs)
    names, texts, spans = _context_texts(model, contexts)
    lam = _lambda(model, texts, batch_size=batch_size, progress=progress)
    return _measure(
        model,
        dirs,
        names,
        spans,
        lam,
        n_permutations=n_permutations,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )


@checked
def reproduce_alignment(
    model: Model,
    concepts: Sequence[str] | None = None,
    *,
    inner_products: Sequence[Literal["causal", "euclidean"]] = ("causal", "euclidean"),
    max_pairs: int = 20,
    n_language: int = 40,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[EmbeddingUnembeddingAlignment, ...]:
    """The alignment under each of ``inner_products``, on the same contexts and one forward
    pass: ``embedding_unembedding_alignment`` with ``default_contexts`` of the shipped
    concepts (``None``: all of them; those without 2 single-token pairs on this tokenizer are
    skipped), as ``scripts/origins_alignment.py`` reports it."""
    if not inner_products:
        raise EmptyInputError("no inner products given: pass ('causal', 'euclidean') or one")
    first = concept_directions(model, concepts, inner_product=inner_products[0], too_few="skip")
    contexts = default_contexts(first, max_pairs=max_pairs, n_language=n_language)
    names, texts, spans = _context_texts(model, contexts)
    lam = _lambda(model, texts, batch_size=batch_size, progress=progress)
    out = []
    for ip in inner_products:
        dirs = (
            first
            if ip == first.inner_product
            else concept_directions(model, list(first.names), inner_product=ip)
        )
        out.append(
            _measure(
                model,
                dirs,
                names,
                spans,
                lam,
                n_permutations=n_permutations,
                n_bootstrap=n_bootstrap,
                seed=seed,
            )
        )
    return tuple(out)


@checked
def alignment_report(
    models: Sequence[str],
    path: str | os.PathLike[str],
    *,
    concepts: Sequence[str] | None = None,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_pairs: int = 20,
    n_language: int = 40,
    batch_size: int = 16,
    device: str = "cpu",
) -> dict[str, Any]:
    """``reproduce_alignment`` (causal and Euclidean) on each model, written as JSON to ``path``.

    ``models`` are names ``mechlin.load_model`` takes (the bundled ``"smollm2-135m"`` and
    ``"gemma-3-270m"``, or a local model folder); ``concepts``: shipped concept names
    (``None``: all, those without 2 single-token pairs skipped per model). Per model the file
    holds ``statistics()`` of each inner product (matched mean with its bootstrap interval and
    bias, the permutation baseline's mean and quantiles, the p-value, the mismatched mean
    |cosine| with its interval, the share of rows the matched cell wins, the number of
    concepts, each matched cosine with its interval), the concepts used, and the seconds spent
    loading and measuring. Returns what it wrote.
    """
    if not models:
        raise EmptyInputError("no models given: pass names such as ['smollm2-135m']")
    report: dict[str, Any] = {
        "analysis": "mechlin.origins.embedding_unembedding_alignment via reproduce_alignment",
        "settings": {
            "n_permutations": n_permutations,
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "max_pairs": max_pairs,
            "n_language": n_language,
            "level": LEVEL,
            "concepts": "all shipped" if concepts is None else list(concepts),
            "contexts": "default_contexts",
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "models": {},
    }
    for name in models:
        t0 = time.perf_counter()
        model = load_model(name, device=device)
        t1 = time.perf_counter()
        results = reproduce_alignment(
            model,
            concepts,
            max_pairs=max_pairs,
            n_language=n_language,
            n_permutations=n_permutations,
            n_bootstrap=n_bootstrap,
            seed=seed,
            batch_size=batch_size,
        )
        t2 = time.perf_counter()
        report["models"][name] = {
            "model_name": results[0].model_name,
            "concepts": list(results[0].unembed_concepts),
            "n_texts": int(results[0].n_contexts.sum()),
            "seconds": {"load": t1 - t0, "measure": t2 - t1},
            **{r.inner_product: r.statistics() for r in results},
        }
        del model
    out = Path(path)
    with atomic_write(out) as tmp:
        tmp.write_text(json.dumps(report, indent=1, sort_keys=True))
    return report


def _directions(
    model: Model,
    concepts: ConceptDirections | Mapping[str, Any] | Sequence[str],
    inner_product: Literal["causal", "euclidean"],
) -> ConceptDirections:
    if isinstance(concepts, ConceptDirections):
        return concepts
    if not concepts:
        raise EmptyInputError("no concepts given: pass names, pairs or a ConceptDirections")
    return concept_directions(model, concepts, inner_product=inner_product, too_few="skip")


def _context_texts(
    model: Model, contexts: Contexts
) -> tuple[list[str], list[str], list[tuple[int, int, int]]]:
    """(row names, all texts, (start, n_base, n_target) of each row in the texts)."""
    if not contexts:
        raise EmptyInputError("contexts is empty: pass {concept: (base texts, target texts)}")
    if LAMBDA_HOOK not in model.hook_dict:
        raise MissingHookError(
            f"the model has no hook point {LAMBDA_HOOK!r} (the unembedding input)"
        )
    names = list(contexts)
    texts: list[str] = []
    spans: list[tuple[int, int, int]] = []
    for name in names:
        base, target = contexts[name]
        if isinstance(base, str) or isinstance(target, str):
            raise ArgumentError(f"contexts[{name!r}] must be two lists of texts, not strings")
        if not base or not target:
            raise EmptyInputError(
                f"contexts[{name!r}] has {len(base)} base and {len(target)} target texts: a "
                "direction needs contexts of both classes"
            )
        spans.append((len(texts), len(base), len(target)))
        texts += [*base, *target]
    return names, texts, spans


def _lambda(model: Model, texts: list[str], *, batch_size: int, progress: bool) -> Tensor:
    """``lambda(x)`` at the last token of each text, float64: (text, d_model)."""
    acts = collect_activations(
        model,
        texts,
        hooks=[LAMBDA_HOOK],
        pooling="last",
        batch_size=batch_size,
        progress=progress,
        dtype=torch.float64,
    )
    return acts[LAMBDA_HOOK].double()


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-300)


def _pair_differences(model: Model, dirs: ConceptDirections) -> Tensor:
    """Whitened ``g(y1) - g(y0)`` of every kept pair, (pair, d_model), as ``concept_directions``
    computes them; refuses directions whose pairs do not rebuild them on this model."""
    w_u = sites.unembedding_matrix(model)  # (d_model, d_vocab)
    if tuple(w_u.shape) != (dirs.unit.shape[1], dirs.d_vocab):
        raise ArgumentError(
            f"the concept directions were computed on a model with d_model "
            f"{dirs.unit.shape[1]} and {dirs.d_vocab} tokens, this one has W_U "
            f"{tuple(w_u.shape)}: compute them with concept_directions(model, ...)"
        )
    ids = dirs.pair_ids  # (pair, 2)
    gamma = w_u[:, ids.flatten()].T.double().cpu().reshape(len(ids), 2, -1)  # (pair, 2, d)
    diffs = (gamma[:, 1] - gamma[:, 0]) @ dirs.cov_inv_sqrt.double()  # (pair, d_model)
    sums = torch.zeros_like(dirs.unit, dtype=torch.float64).index_add_(0, dirs.pair_concept, diffs)
    if not torch.allclose(_unit(sums), dirs.unit.double(), atol=1e-6):
        raise ArgumentError(
            "the concept directions do not follow from their pairs on this model (computed "
            "on another model, or changed): compute them with concept_directions(model, ...)"
        )
    return diffs


def _resample_weights(n: int, n_bootstrap: int, g: torch.Generator) -> Tensor:
    """(n_bootstrap, n): how often each of ``n`` items is drawn in each resample, over ``n``."""
    idx = torch.randint(n, (n_bootstrap, n), generator=g)
    counts = torch.zeros(n_bootstrap, n, dtype=torch.float64)
    return counts.scatter_add_(1, idx, torch.ones_like(counts)) / n


def _measure(
    model: Model,
    dirs: ConceptDirections,
    names: list[str],
    spans: list[tuple[int, int, int]],
    lam: Float[Tensor, "text d_model"],
    *,
    n_permutations: int,
    n_bootstrap: int,
    seed: int,
) -> EmbeddingUnembeddingAlignment:
    matched = torch.tensor([[a == b for b in dirs.names] for a in names], dtype=torch.bool)
    if not matched.any():
        raise ArgumentError(
            f"no concept of contexts {names} has an unembedding direction {list(dirs.names)}: "
            "nothing to match"
        )
    diffs = _pair_differences(model, dirs)  # (pair, d_model)
    white = lam @ dirs.cov_sqrt.double()  # (text, d_model) whitened l = Cov^1/2 lambda
    rows = torch.stack(
        [white[s + nb : s + nb + nt].mean(0) - white[s : s + nb].mean(0) for s, nb, nt in spans]
    )  # (row, d_model)
    unit_cols = dirs.unit.double()  # (col, d_model)
    alignment = _unit(rows) @ unit_cols.T  # (row, col)

    g = torch.Generator().manual_seed(seed)
    n_cols = len(dirs.names)
    perms = torch.stack([torch.randperm(n_cols, generator=g) for _ in range(n_permutations)])
    r_idx, c_idx = matched.nonzero(as_tuple=True)  # (matched,) each
    permuted = alignment[r_idx, perms[:, c_idx]].mean(1)  # (perm,) matched mean per permutation

    base_w = [_resample_weights(nb, n_bootstrap, g) for _, nb, _ in spans]  # (boot, nb) each
    target_w = [_resample_weights(nt, n_bootstrap, g) for _, _, nt in spans]
    pair_rows = [torch.nonzero(dirs.pair_concept == c).flatten() for c in range(n_cols)]
    pair_w = [_resample_weights(len(p), n_bootstrap, g) for p in pair_rows]
    boot = torch.empty(n_bootstrap, len(names), n_cols, dtype=torch.float64)
    for a in range(0, n_bootstrap, _BOOTSTRAP_CHUNK):
        b = min(a + _BOOTSTRAP_CHUNK, n_bootstrap)
        rows_b = torch.stack(
            [
                tw[a:b] @ white[s + nb : s + nb + nt] - bw[a:b] @ white[s : s + nb]
                for (s, nb, nt), bw, tw in zip(spans, base_w, target_w, strict=True)
            ],
            dim=1,
        )  # (chunk, row, d_model)
        cols_b = torch.stack(
            [w[a:b] @ diffs[p] for p, w in zip(pair_rows, pair_w, strict=True)], dim=1
        )  # (chunk, col, d_model): mean resampled pair difference
        boot[a:b] = torch.einsum("brd,bcd->brc", _unit(rows_b), _unit(cols_b))
    q = torch.tensor([(1 - LEVEL) / 2, (1 + LEVEL) / 2], dtype=torch.float64)
    nan = torch.full((n_bootstrap,), float("nan"), dtype=torch.float64)
    return EmbeddingUnembeddingAlignment(
        context_concepts=tuple(names),
        unembed_concepts=tuple(dirs.names),
        alignment=alignment,
        matched=matched,
        n_contexts=torch.tensor([[nb, nt] for _, nb, nt in spans]),
        inner_product=dirs.inner_product,
        model_name=str(getattr(model.cfg, "model_name", type(model).__name__)),
        alignment_interval=_basic_interval(alignment, torch.quantile(boot, q, dim=0)),
        bootstrap_matched_means=boot[:, matched].mean(1),
        bootstrap_mismatched_mean_abs=boot[:, ~matched].abs().mean(1) if (~matched).any() else nan,
        permuted_matched_means=permuted,
        seed=seed,
    )
