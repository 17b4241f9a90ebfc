"""Is a concept really a direction? Park et al.'s tests of the linear representation hypothesis.

Given ``ConceptDirections`` (``mechlin.directions.concepts``):

* **Linearity** (``linearity_test``): for each pair of a concept, project its whitened difference
  ``g(y1) - g(y0)`` onto the direction estimated from the *other* pairs (leave-one-out), and
  compare with the projections of 100,000 random token pairs (seed 100, Park's numbers). If the
  concept is a direction, the held-out pairs project far into the tail of the random pairs.
  With the causal inner product random projections are ~N(0, 2) (``Cov(g) = I``). Reported per
  concept: Cohen's d (held-out vs random) and whether the *median* held-out projection lies
  beyond the ``quantile`` (0.99) of the random ones: mechlin's pass rule, since Park et al.
  judged the histograms by eye (their one failure on LLaMA-2-7B: ``thing -> part``).
* **Orthogonality** (``orthogonality``): the Gram matrices of the directions under the causal
  and the Euclidean inner product, with their mean |off-diagonal|. Causally separable concepts
  (male -> female vs English -> French) should be near-orthogonal under the causal inner
  product, not necessarily under the Euclidean one (LLaMA-2-7B: 0.046 causal vs 0.069).
* **Separability** (``separability``): every vocabulary token's score on two concepts,
  ``g(y) @ g_W`` and ``g(y) @ g_Z``, and their correlation over the vocabulary. With the causal
  inner product this correlation *equals* ``<g_W, g_Z>_C`` (because ``Cov(g) = I``), which is
  the sense in which the causal inner product makes separable concepts uncorrelated.

Pitfalls: a concept with few single-token pairs gives a noisy leave-one-out direction (look at
``counts``); a failed linearity test can mean mixed senses in the pair list rather than a
non-linear concept; random pairs include the model's unused tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechlin import sites, viz
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.directions.concepts import ConceptDirections
from mechlin.errors import ArgumentError
from mechlin.results import Result


def _gamma_rows(w_u: Tensor, ids: Tensor) -> Tensor:
    return w_u[:, ids].T.double().cpu()  # (len(ids), d_model)


def _check_model(model: Model, directions: ConceptDirections) -> Tensor:
    w_u = sites.unembedding_matrix(model)
    if w_u.shape != (directions.unit.shape[1], directions.d_vocab):
        raise ArgumentError(
            f"the model's W_U is {tuple(w_u.shape)} but the directions were computed on a "
            f"({directions.unit.shape[1]}, {directions.d_vocab}) unembedding: use the same model"
        )
    return w_u


@dataclass(frozen=True)
class LinearityTest(Result):
    """Leave-one-out projections of each concept's pairs vs projections of random pairs."""

    names: tuple[str, ...]
    loo: Float[Tensor, " pair"]  # each kept pair on the direction of the other pairs
    pair_concept: Int[Tensor, " pair"]
    random: Float[Tensor, "n_random concept"]  # random pairs on each concept's direction
    quantile: float  # pass rule: median held-out projection > this quantile of random ones
    seed: int
    inner_product: str

    def __post_init__(self) -> None:
        if self.random.shape[1] != len(self.names) or len(self.loo) != len(self.pair_concept):
            raise ArgumentError("random must have one column per concept, loo one entry per pair")
        if not 0 < self.quantile < 1:
            raise ArgumentError(f"quantile must be in (0, 1), got {self.quantile}")

    def _loo(self, c: int) -> Tensor:
        return self.loo[self.pair_concept == c]

    @cached_property
    def cohens_d(self) -> Float[Tensor, " concept"]:
        """(mean held-out - mean random) / pooled standard deviation, per concept."""
        out = []
        for c in range(len(self.names)):
            x, r = self._loo(c).double(), self.random[:, c].double()
            n1, n2 = len(x), len(r)
            pooled = ((n1 - 1) * x.var() + (n2 - 1) * r.var()) / (n1 + n2 - 2)
            out.append((x.mean() - r.mean()) / pooled.sqrt())
        return torch.stack(out)

    @cached_property
    def thresholds(self) -> Float[Tensor, " concept"]:
        """The ``quantile`` of the random projections, per concept."""
        return torch.quantile(self.random.double(), self.quantile, dim=0)

    @property
    def passes(self) -> dict[str, bool]:
        """Concept -> whether its median held-out projection exceeds ``thresholds``."""
        med = [float(self._loo(c).median()) for c in range(len(self.names))]
        return {n: m > float(t) for n, m, t in zip(self.names, med, self.thresholds, strict=True)}

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(n for n, ok in self.passes.items() if not ok)

    def to_frame(self) -> Any:
        """One row per concept: pairs, mean/median held-out projection, Cohen's d, pass."""
        import pandas as pd  # noqa: PLC0415

        d, thr, ok = self.cohens_d, self.thresholds, self.passes
        rows = []
        for c, name in enumerate(self.names):
            x = self._loo(c)
            rows.append(
                {
                    "concept": name,
                    "n_pairs": len(x),
                    "mean_projection": float(x.mean()),
                    "median_projection": float(x.median()),
                    "random_quantile": float(thr[c]),
                    "cohens_d": float(d[c]),
                    "linear": ok[name],
                }
            )
        return pd.DataFrame(rows)

    def plot(self, fig: Any = None, *, names: Sequence[str] | None = None, n_cols: int = 6) -> Any:
        """Histograms of held-out (colour) vs random (grey) projections; returns the figure."""
        import math  # noqa: PLC0415

        chosen = list(self.names if names is None else names)
        n_cols = min(n_cols, len(chosen))
        n_rows = math.ceil(len(chosen) / n_cols)
        fig, axes = viz.figure(n_rows, n_cols, fig=fig, figsize=(2.2 * n_cols, 1.7 * n_rows))
        d, ok = self.cohens_d, self.passes
        for ax, name in zip(axes.flat, chosen, strict=False):
            c = self.names.index(name)
            ax.hist(self.random[:, c].numpy(), bins=60, density=True, color="0.7")
            ax.hist(
                self._loo(c).numpy(),
                bins=15,
                density=True,
                alpha=0.7,
                color="tab:blue" if ok[name] else "tab:red",
            )
            ax.set_title(f"{name}\nd={float(d[c]):.1f}", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
        for ax in list(axes.flat)[len(chosen) :]:
            ax.axis("off")
        fig.suptitle(
            f"Linearity ({self.inner_product}): held-out pair projections vs "
            f"{len(self.random):,} random pairs (red: median below the random "
            f"{100 * self.quantile:g}th percentile)",
            fontsize=8,
        )
        fig.tight_layout()
        return fig


@checked
@torch.no_grad()
def linearity_test(
    model: Model,
    directions: ConceptDirections,
    *,
    n_random: int = 100_000,
    seed: int = 100,
    quantile: float = 0.99,
    chunk: int = 8192,
) -> LinearityTest:
    """Park's linearity test of every concept in ``directions`` (see the module docstring)."""
    w_u = _check_model(model, directions)
    # Leave-one-out: pair i on normalize(sum of the other pairs' differences).
    ids = directions.pair_ids
    diffs = directions.whiten(_gamma_rows(w_u, ids[:, 1])) - directions.whiten(
        _gamma_rows(w_u, ids[:, 0])
    )  # (pair, d_model)
    n_concepts = len(directions.names)
    which = directions.pair_concept
    sums = torch.zeros(n_concepts, diffs.shape[1], dtype=torch.float64).index_add_(0, which, diffs)
    others = sums[which] - diffs  # (pair, d_model)
    loo = (diffs * others).sum(-1) / others.norm(dim=-1)
    # Random pairs, projected on the full directions in chunks: (g1 - g0) @ unit.T.
    project = directions.cov_inv_sqrt @ directions.unit.T  # (d_model, concept)
    generator = torch.Generator().manual_seed(seed)
    pairs = torch.randint(0, directions.d_vocab, (n_random, 2), generator=generator)
    random = torch.cat(
        [
            (_gamma_rows(w_u, p[:, 1]) - _gamma_rows(w_u, p[:, 0])) @ project
            for p in pairs.split(chunk)
        ]
    )
    return LinearityTest(
        names=directions.names,
        loo=loo.float(),
        pair_concept=which,
        random=random.float(),
        quantile=quantile,
        seed=seed,
        inner_product=directions.inner_product,
    )


@dataclass(frozen=True)
class Orthogonality(Result):
    """Gram matrices of the same concepts' directions under the causal and Euclidean products."""

    names: tuple[str, ...]
    causal: Float[Tensor, "concept concept"]
    euclidean: Float[Tensor, "concept concept"]

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.causal.shape != (n, n) or self.euclidean.shape != (n, n):
            raise ArgumentError(f"Gram matrices must be ({n}, {n}) for {n} concepts")

    @staticmethod
    def _off(gram: Tensor) -> float:
        mask = ~torch.eye(len(gram), dtype=torch.bool)
        return float(gram.abs()[mask].mean())

    @property
    def mean_abs_off_diagonal(self) -> dict[str, float]:
        """{"causal": ..., "euclidean": ...}: mean |inner product| over distinct concepts."""
        return {"causal": self._off(self.causal), "euclidean": self._off(self.euclidean)}

    def to_frame(self) -> Any:
        """One row per pair of distinct concepts with both inner products."""
        import pandas as pd  # noqa: PLC0415

        n = len(self.names)
        return pd.DataFrame(
            [
                {
                    "concept_a": self.names[i],
                    "concept_b": self.names[j],
                    "causal": float(self.causal[i, j]),
                    "euclidean": float(self.euclidean[i, j]),
                }
                for i in range(n)
                for j in range(i + 1, n)
            ]
        )

    def plot(self, fig: Any = None) -> Any:
        """The two |Gram| heatmaps side by side, on one colour scale; returns the figure."""
        n = len(self.names)
        fig, panels = viz.figure(1, 2, fig=fig, figsize=(0.5 * n + 4, 0.25 * n + 2.2))
        axes = panels[0]
        means = self.mean_abs_off_diagonal
        for ax, kind in zip(axes, ("causal", "euclidean"), strict=True):
            viz.gram_heatmap(
                getattr(self, kind),
                self.names,
                ax=ax,
                title=f"{kind}: mean |off-diagonal| {means[kind]:.3f}",
            )
        fig.tight_layout()
        return fig


@checked
def orthogonality(causal: ConceptDirections, euclidean: ConceptDirections) -> Orthogonality:
    """Compare the Gram matrices of the same concepts under both inner products.

    ``causal`` and ``euclidean`` are ``concept_directions`` of the same model and concepts with
    ``inner_product="causal"`` and ``"euclidean"``.
    """
    if causal.inner_product != "causal" or euclidean.inner_product != "euclidean":
        raise ArgumentError(
            "pass the causal directions first and the Euclidean ones second (got "
            f"{causal.inner_product!r}, {euclidean.inner_product!r})"
        )
    if causal.names != euclidean.names or not torch.equal(causal.pair_ids, euclidean.pair_ids):
        raise ArgumentError("the two ConceptDirections must hold the same concepts and pairs")
    return Orthogonality(causal.names, causal.gram, euclidean.gram)


@dataclass(frozen=True)
class Separability(Result):
    """Every vocabulary token's score on two concepts and their correlation over the vocabulary."""

    concepts: tuple[str, str]
    scores: Float[Tensor, "d_vocab 2"]  # g(y) @ direction of each concept
    correlation: float  # Pearson correlation of the two columns over the vocabulary
    inner_product: float  # the two directions' inner product (causal or Euclidean)
    kind: str  # "causal" | "euclidean"
    pair_ids: tuple[Int[Tensor, "n 2"], Int[Tensor, "m 2"]]  # each concept's pairs

    def _vocab_size(self) -> int:
        """``scores`` has one row per vocabulary token: ``pair_ids`` index those rows."""
        return int(self.scores.shape[0])

    def plot(self, ax: Any = None) -> Any:
        """The vocabulary (grey) and both concepts' pair tokens on the two scores."""
        fig, ax = viz.axes(ax, figsize=(4.5, 4))
        s = self.scores.numpy()
        sample = s[:: max(1, len(s) // 20000)]
        ax.scatter(sample[:, 0], sample[:, 1], s=1, color="0.8", label="vocabulary")
        colors = (("tab:blue", "tab:orange"), ("tab:green", "tab:red"))
        for name, ids, (c0, c1) in zip(self.concepts, self.pair_ids, colors, strict=True):
            base, target = name.split(" -> ") if " -> " in name else ("base", "target")
            for col, label, color in ((0, base, c0), (1, target, c1)):
                pts = s[ids[:, col].numpy()]
                ax.scatter(pts[:, 0], pts[:, 1], s=8, color=color, label=f"{label} ({name})")
        ax.set_xlabel(f"score on {self.concepts[0]}")
        ax.set_ylabel(f"score on {self.concepts[1]}")
        ax.set_title(
            f"{self.kind}: corr over vocab {self.correlation:.3f}, <.,.> {self.inner_product:.3f}",
            fontsize=8,
        )
        ax.legend(fontsize=6, markerscale=2)
        fig.tight_layout()
        return fig


@checked
@torch.no_grad()
def separability(
    model: Model, directions: ConceptDirections, concept_a: str, concept_b: str
) -> Separability:
    """Scores of every token on two concepts' directions and their correlation."""
    w_u = _check_model(model, directions)
    a, b = directions.index(concept_a), directions.index(concept_b)
    project = directions.cov_inv_sqrt @ directions.unit[[a, b]].T  # (d_model, 2)
    offset = directions.gamma_mean @ project  # (2,)
    scores = (
        torch.cat(
            [
                w_u[:, s : s + 16384].T.double().cpu() @ project
                for s in range(0, w_u.shape[1], 16384)
            ]
        )
        - offset
    )  # (d_vocab, 2): whitened rows on the two directions
    centred = scores - scores.mean(0)
    cov = centred.T @ centred
    corr = float(cov[0, 1] / (cov[0, 0] * cov[1, 1]).sqrt())
    return Separability(
        concepts=(concept_a, concept_b),
        scores=scores.float(),
        correlation=corr,
        inner_product=float(directions.gram[a, b]),
        kind=directions.inner_product,
        pair_ids=(directions.pairs(concept_a), directions.pairs(concept_b)),
    )
