"""Concept directions in the residual stream at any layer, learned from labelled activations.

Park et al.'s unembedding-space directions (``mechlin.directions.concepts``) live where the
model reads out tokens; inside the network a concept can be looked for at any layer with
labelled texts.
``residual_direction`` reads one activation per text (``site`` at ``layer``, at the last token or
a given position) and fits a unit direction pointing from label 0 to label 1:

* ``"mean_diff"``: the difference of the two class means (for pairs: the mean of the paired
  differences, the residual analogue of Park's estimator).
* ``"logistic"``: the weight vector of an L2-regularized logistic probe (float64, Newton steps
  of mechlin's shared solver ``mechlin._logreg.fit_l2``, on standardized features; the weights
  are mapped back to activation coordinates).
* ``"pca"``: the top principal direction of the paired differences ``h(x1) - h(x0)`` (uncentred,
  so the shared shift is the signal rather than removed; sign set to agree with the mean
  difference). Needs paired examples.

Texts are split into train and test before anything is fitted (``test_fraction``, ``seed``;
stratified by label, or by pair so both texts of a pair fall on the same side). The direction
is scored as a probe: project every activation on it and threshold at the midpoint of the two
training class means; ``test_accuracy`` is the held-out accuracy of that rule. Decodability is
not use: steer along the direction (``mechlin.steer``) or interchange it
(``mechlin.directions.interchange.interchange_along``, a thin wrapper of TransformerLens's
subspace interchange with its norm-matched random-subspace placebo) to test that the model uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechlin import sites, viz
from mechlin._checks import checked
from mechlin._logreg import fit_l2
from mechlin._splits import held_out_mask
from mechlin._types import Model
from mechlin.errors import ArgumentError, EmptyInputError, OutOfRangeError, ProbeInputError
from mechlin.neurons.activations import collect_activations
from mechlin.results import Result

Method = Literal["mean_diff", "logistic", "pca"]


@dataclass(frozen=True)
class ResidualDirection(Result):
    """A unit direction in activation space separating two labels, scored as a probe."""

    direction: Float[Tensor, " d_model"]  # unit norm, from label 0 towards label 1
    method: str
    hook: str
    position: str  # "last" or the position index used
    scores: Float[Tensor, " example"]  # activation @ direction, every example
    labels: Int[Tensor, " example"]  # 0 / 1
    is_test: Bool[Tensor, " example"]  # held out from fitting
    threshold: float  # midpoint of the two training class means of ``scores``
    texts: tuple[str, ...]
    seed: int
    paired: bool = False  # texts alternate (label 0, label 1) of each pair

    def __post_init__(self) -> None:
        n = len(self.texts)
        if not len(self.scores) == len(self.labels) == len(self.is_test) == n:
            raise ArgumentError("scores, labels, is_test and texts must have one entry per example")
        if abs(float(self.direction.norm()) - 1) > 1e-4:
            raise ArgumentError("direction must have unit norm")

    def _accuracy(self, mask: Tensor) -> float:
        pred = (self.scores[mask] > self.threshold).long()
        return float((pred == self.labels[mask]).float().mean()) if mask.any() else float("nan")

    @property
    def train_accuracy(self) -> float:
        return self._accuracy(~self.is_test)

    @property
    def test_accuracy(self) -> float:
        """Held-out accuracy of ``score > threshold`` as a predictor of label 1."""
        return self._accuracy(self.is_test)

    @property
    def test_pair_accuracy(self) -> float:
        """Paired input: share of held-out pairs whose label-1 text scores higher (else NaN)."""
        if not self.paired:
            return float("nan")
        held = self.is_test[0::2]
        wins = self.scores[1::2][held] > self.scores[0::2][held]
        return float(wins.float().mean())

    def to_frame(self) -> Any:
        """One row per example: text, label, split, score, prediction."""
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(
            {
                "text": list(self.texts),
                "label": self.labels.tolist(),
                "split": ["test" if t else "train" for t in self.is_test.tolist()],
                "score": self.scores.tolist(),
                "predicted": (self.scores > self.threshold).long().tolist(),
            }
        )

    def plot(self, ax: Any = None) -> Any:
        """Scores by label (train filled, test hollow) and the threshold; returns the figure."""
        fig, ax = viz.axes(ax, figsize=(5, 2.6))
        for label, color in ((0, "tab:blue"), (1, "tab:orange")):
            for test in (False, True):
                mask = (self.labels == label) & (self.is_test == test)
                jitter = torch.rand(int(mask.sum()), generator=torch.Generator().manual_seed(0))
                y = label + 0.15 * (jitter - 0.5)
                ax.scatter(
                    self.scores[mask].numpy(),
                    y.numpy(),
                    s=14,
                    facecolors="none" if test else color,
                    edgecolors=color,
                    label=f"label {label} ({'test' if test else 'train'})",
                )
        ax.axvline(self.threshold, color="grey", ls="--")
        ax.set_yticks([0, 1])
        ax.set_xlabel(f"projection on the {self.method} direction")
        ax.set_title(
            f"{self.hook} ({self.position}): test accuracy {self.test_accuracy:.2f}", fontsize=8
        )
        ax.legend(fontsize=6)
        fig.tight_layout()
        return fig


def token_position(n_pos: int, position: Literal["last"] | int) -> int:
    """The index of ``position`` ("last" or an int, negative from the end) in ``n_pos`` tokens."""
    if position == "last":
        return n_pos - 1
    assert isinstance(position, int)
    if not -n_pos <= position < n_pos:
        raise OutOfRangeError(f"position {position} is out of range for a text of {n_pos} tokens")
    return position % n_pos


def collect_residuals(
    model: Model,
    texts: Sequence[str],
    *,
    layer: int,
    site: sites.LayerSite = "resid_post",
    position: Literal["last"] | int = "last",
    batch_size: int = 32,
) -> Float[Tensor, "example d_model"]:
    """The activation at ``site`` of ``layer`` at ``position`` of each text (float32, CPU).

    A thin view of ``mechlin.collect_activations`` (right-padded batches, exact for a causal
    model). ``position`` counts the model's input tokens, BOS included; the BOS position itself
    is refused (its activation does not depend on the text).
    """
    name = sites.hook_name(model, site, layer)
    acts = collect_activations(
        model,
        texts,
        hooks=[name],
        pooling="last" if position == "last" else "none",
        batch_size=batch_size,
        max_tokens=None,
        progress=False,
    )
    if position == "last":
        return acts[name].float()
    n_bos = 1 if bool(model.cfg.default_prepend_bos) else 0
    rows = []
    for i in range(len(texts)):
        pos = token_position(int(acts.n_tokens[i]) + n_bos, position)
        if pos < n_bos:
            raise OutOfRangeError(
                f"position {position} of text {i} is the BOS token: pick a later one"
            )
        rows.append(acts.rows_of(i)[pos - n_bos])
    return acts[name][torch.stack(rows)].float()


def _logistic(x: Tensor, y: Tensor, l2: float) -> Tensor:
    """Weights (activation coordinates) of an L2 logistic regression of y on x, float64.

    Minimises mean BCE + l2/2 |w|^2 on standardized x, i.e. scikit-learn's objective with
    C = 1 / (n l2) and no class weights (``mechlin._logreg.fit_l2``, Newton's method).
    """
    x = x.double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-8)
    z = (x - mu) / sd
    w, _ = fit_l2(z[None], y.bool(), C=1.0 / (l2 * x.shape[0]), balanced=False)
    return w[0] / sd


@checked
def residual_direction(
    model: Model,
    examples: Sequence[str] | Sequence[tuple[str, str]],
    labels: Sequence[int] | None = None,
    *,
    layer: int,
    site: sites.LayerSite = "resid_post",
    position: Literal["last"] | int = "last",
    method: Method = "mean_diff",
    test_fraction: float = 0.25,
    seed: int = 0,
    l2: float = 1e-2,
) -> ResidualDirection:
    """Fit a concept direction at ``layer`` from labelled texts or (label 0, label 1) pairs.

    Args:
        examples: texts (with ``labels``, 0 or 1 each) or pairs ``(text0, text1)`` (no
            labels: the first of a pair is label 0). ``method="pca"`` needs pairs.
        layer, site, position: where to read (``position`` indexes ``model.to_tokens``).
        test_fraction: share held out: of each label's texts, or of the pairs (whole pairs);
            at least one of each.
        l2: the logistic probe's penalty on standardized weights.
    """
    if not examples:
        raise EmptyInputError("no examples given: pass texts with labels, or (text0, text1) pairs")
    if not 0 < test_fraction < 1:
        raise ArgumentError(f"test_fraction must be in (0, 1), got {test_fraction}")
    paired = labels is None
    if paired:
        bad = [e for e in examples if isinstance(e, str) or len(e) != 2]
        if bad:
            raise ArgumentError(
                f"without labels, examples must be (text0, text1) pairs; got {bad[0]!r}. "
                "Pass labels= for single texts."
            )
        texts = [t for pair in examples for t in pair]
        label_t = torch.tensor([0, 1] * len(examples))
        groups: Tensor | None = torch.arange(len(examples)).repeat_interleave(2)
    else:
        assert labels is not None
        if method == "pca":
            raise ArgumentError("method='pca' takes (text0, text1) pairs: pass pairs and no labels")
        if len(labels) != len(examples) or any(not isinstance(e, str) for e in examples):
            raise ArgumentError("with labels, examples must be texts, one label (0 or 1) per text")
        if set(labels) - {0, 1}:
            raise ArgumentError(f"labels must be 0 or 1, got {sorted(set(labels) - {0, 1})}")
        texts = [str(e) for e in examples]
        label_t = torch.tensor([int(v) for v in labels])
        groups = None
    hook = sites.hook_name(model, site, layer)
    acts = collect_residuals(model, texts, layer=layer, site=site, position=position)
    is_test = held_out_mask(label_t, groups, test_fraction, seed)
    train = ~is_test
    x, y = acts[train].double(), label_t[train]
    mean_diff = x[y == 1].mean(0) - x[y == 0].mean(0)  # (d_model,)
    if method == "mean_diff":
        raw = mean_diff
    elif method == "logistic":
        raw = _logistic(x, y, l2)
    else:  # pca of the training pairs' differences (texts alternate label 0, 1)
        diffs = (acts[1::2] - acts[0::2]).double()[train[0::2]]  # (pair, d_model)
        raw = torch.linalg.svd(diffs, full_matrices=False).Vh[0]
        raw = raw if raw @ mean_diff >= 0 else -raw
    if not bool(torch.isfinite(raw).all()) or float(raw.norm()) < 1e-12:
        raise ProbeInputError(
            f"residual_direction(method={method!r}): the two classes' activations at {hook} do "
            "not differ (or hold NaN/inf), so there is no direction: check the texts and labels"
        )
    direction = raw / raw.norm()
    scores = acts.double() @ direction  # (example,)
    threshold = 0.5 * float(scores[train][y == 0].mean() + scores[train][y == 1].mean())
    return ResidualDirection(
        direction=direction.float(),
        method=method,
        hook=hook,
        position=str(position),
        scores=scores.float(),
        labels=label_t,
        is_test=is_test,
        threshold=threshold,
        texts=tuple(texts),
        seed=seed,
        paired=paired,
    )
