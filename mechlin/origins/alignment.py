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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechlin import viz
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.datasets.features import language_identity
from mechlin.directions import ConceptDirections, concept_directions
from mechlin.errors import ArgumentError, EmptyInputError, MissingHookError
from mechlin.neurons import collect_activations
from mechlin.results import Result

LAMBDA_HOOK = "unembed.hook_in"  # the final hidden state the unembedding reads
WORD_TEMPLATES: tuple[str, ...] = ("Word: {w}. Word: {w}. Word:", "I said {w}, and again I said")
Contexts = Mapping[str, tuple[Sequence[str], Sequence[str]]]


@dataclass(frozen=True)
class EmbeddingUnembeddingAlignment(Result):
    """Cosines between concepts' context directions (rows) and unembedding directions (cols)."""

    context_concepts: tuple[str, ...]
    unembed_concepts: tuple[str, ...]
    alignment: Float[Tensor, "row col"]  # cosine under ``inner_product``
    matched: Bool[Tensor, "row col"]  # same concept
    n_contexts: Int[Tensor, "row 2"]  # (base, target) contexts of each row
    inner_product: str
    model_name: str

    def __post_init__(self) -> None:
        shape = (len(self.context_concepts), len(self.unembed_concepts))
        if self.alignment.shape != shape or self.matched.shape != shape:
            raise ArgumentError(f"alignment and matched must be {shape}")
        if self.n_contexts.shape != (shape[0], 2):
            raise ArgumentError(f"n_contexts must be ({shape[0]}, 2)")

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

    def summary(self) -> str:
        return "\n".join(
            [
                f"{self.model_name}: {len(self.context_concepts)} concepts' context directions "
                f"(lambda at the last token) vs {len(self.unembed_concepts)} unembedding "
                "directions, "
                f"{self.inner_product} inner product",
                f"matched cosine {self.matched_mean:.3f} (mean); mismatched |cosine| "
                f"{self.mismatched_mean_abs:.3f} (mean); matched beats every mismatch in "
                f"{self.fraction_matched_wins:.0%} of rows",
            ]
        )

    def to_frame(self) -> Any:
        """One row per (context concept, unembedding concept) cell."""
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(
            [
                {
                    "context_concept": a,
                    "unembed_concept": b,
                    "cosine": float(self.alignment[i, j]),
                    "matched": bool(self.matched[i, j]),
                }
                for i, a in enumerate(self.context_concepts)
                for j, b in enumerate(self.unembed_concepts)
            ]
        )

    def plot(self, ax: Any = None) -> Any:
        """Heatmap of the cosines, matched cells outlined; returns the figure."""
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
        ax.set_title(f"{self.inner_product} cosine (matched outlined)", fontsize=9)
        fig.colorbar(img, ax=ax, fraction=0.046)
        return fig


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
    batch_size: int = 16,
    progress: bool = False,
) -> EmbeddingUnembeddingAlignment:
    """Cosines of concepts' context directions (final hidden states) with unembedding ones.

    Args:
        model: a hooked model with ``unembed.hook_in``, ``W_U`` and a tokenizer.
        concepts: a ``ConceptDirections`` (its inner product is used), or what
            ``concept_directions`` takes (pair mappings or shipped names; concepts without 2
            single-token pairs are skipped).
        contexts: ``{concept: (base contexts, target contexts)}``: texts whose next word is of
            the base kind vs of the target kind; ``None``: ``default_contexts``.
        inner_product: for ``concepts`` given by name or pairs: ``"causal"`` or
            ``"euclidean"``.
    """
    if isinstance(concepts, ConceptDirections):
        dirs = concepts
    else:
        if not concepts:
            raise EmptyInputError("no concepts given: pass names, pairs or a ConceptDirections")
        dirs = concept_directions(model, concepts, inner_product=inner_product, too_few="skip")
    if contexts is None:
        contexts = default_contexts(dirs)
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
    acts = collect_activations(
        model,
        texts,
        hooks=[LAMBDA_HOOK],
        pooling="last",
        batch_size=batch_size,
        progress=progress,
        dtype=torch.float64,
    )
    lam = acts[LAMBDA_HOOK].double()  # (text, d_model)
    rows = []
    for start, nb, nt in spans:
        delta = lam[start + nb : start + nb + nt].mean(0) - lam[start : start + nb].mean(0)
        rows.append(delta @ dirs.cov_sqrt.double())  # whitened l = Cov^1/2 lambda (symmetric)
    deltas = torch.stack(rows)  # (row, d_model)
    unit_rows = deltas / deltas.norm(dim=1, keepdim=True).clamp_min(1e-300)
    alignment = unit_rows @ dirs.unit.double().T  # (row, col)
    matched = torch.tensor([[a == b for b in dirs.names] for a in names], dtype=torch.bool)
    if not matched.any():
        raise ArgumentError(
            f"no concept of contexts {names} has an unembedding direction {list(dirs.names)}: "
            "nothing to match"
        )
    return EmbeddingUnembeddingAlignment(
        context_concepts=tuple(names),
        unembed_concepts=tuple(dirs.names),
        alignment=alignment,
        matched=matched,
        n_contexts=torch.tensor([[nb, nt] for _, nb, nt in spans]),
        inner_product=dirs.inner_product,
        model_name=str(getattr(model.cfg, "model_name", type(model).__name__)),
    )
