"""Cognition: what the hidden states *know* about a multiple-choice answer, per layer.

Yan et al. (2024) call the information a network's hidden vectors carry its *cognitive*
capability and read it with linear representations. mechlin's reading, per layer:

1. Hidden states. The residual stream after every block (``resid_post``) at one position: by
   default the last prompt token of the letter prompt (the ``":"`` of ``"Answer:"``, where the
   model is about to say the letter), collected with ``mechlin.neurons.collect_activations``
   (``pooling="last"``, exact under batching).
2. Split. Items are split once (seeded) into training, validation and test items; every row of
   an item falls on its item's side (grouped), so options of one question never straddle.
3. Features. Optionally PCA (``pca_dim``, fitted on the training rows only, a plain SVD of the
   centred training matrix), then each feature z-scored with training statistics.
4. Probe (``probe=``). ``"letter"``: one-vs-rest L2 logistic regressions (``fit_l2``, balanced,
   ``C``), one per letter, from the letter prompt's state; the prediction is the highest-scoring
   letter among the item's own letters. ``"option"``: one binary probe "is this option right?"
   on the state at the end of ``"Question: ...\\nAnswer: {option}"``; the prediction is the
   item's highest-scoring option.
5. Scores. Held-out accuracy per layer, beside chance (mean of 1 / choices) and a shuffled-label
   control (the same probe fitted on permuted training labels; it should sit at chance).

A model's cognition is the held-out accuracy at its best layer. Pitfall: picking the best layer
by test accuracy and reporting that same accuracy is optimistic (a maximum over noisy layers).
``select="validation"`` (the default) picks the layer on validation items and reports the test
accuracy there; ``select="test"`` reports the plain maximum and says so in the summary.

mechlin's choices, not the paper's (whose probe details were not available): the position, the
letter probe, ``pca_dim=64``, z-scoring, ``C=1``, a 50/20/30 train/validation/test split.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechlin import viz
from mechlin._checks import checked
from mechlin._logreg import fit_l2
from mechlin._types import Model
from mechlin.cognition.prompts import cloze_context, cloze_options, letter_prompt
from mechlin.datasets.mcq import MCQDataset
from mechlin.errors import (
    ArgumentError,
    ArgumentTypeError,
    EmptyInputError,
    OutOfRangeError,
)
from mechlin.neurons import collect_activations
from mechlin.results import Result
from mechlin.sites import hook_names

ProbeKind = Literal["letter", "option"]
Select = Literal["validation", "test"]


@dataclass(frozen=True)
class CognitionProbe(Result):
    """Held-out accuracy of a linear probe for the right answer, at every layer."""

    _nonfinite: ClassVar[frozenset[str]] = frozenset({"val_acc"})  # NaN: no validation items

    model_name: str
    dataset: str
    probe: str
    select: str
    pca_dim: int  # features the probe saw (0: the raw hidden states)
    layers: tuple[int, ...]
    test_acc: Float[Tensor, " layer"]
    val_acc: Float[Tensor, " layer"]  # NaN when select="test"
    train_acc: Float[Tensor, " layer"]
    shuffled_acc: Float[Tensor, " layer"]  # probe fitted on permuted training labels
    chance: float
    best_layer: int
    n_train: int
    n_val: int
    n_test: int
    projection: Float[Tensor, "row 2"]  # 2-d PCA of the states at the best layer (all rows)
    projection_label: Int[Tensor, " row"]  # correct letter ("letter") or correct? ("option")
    projection_is_test: Int[Tensor, " row"]

    def __post_init__(self) -> None:
        n = len(self.layers)
        for name in ("test_acc", "val_acc", "train_acc", "shuffled_acc"):
            if getattr(self, name).shape != (n,):
                raise ArgumentError(f"{name} must have one entry per layer ({n})")
        if self.best_layer not in self.layers:
            raise ArgumentError(f"best_layer {self.best_layer} is not among the layers")
        m = self.projection.shape[0]
        if self.projection_label.shape != (m,) or self.projection_is_test.shape != (m,):
            raise ArgumentError("projection_label and projection_is_test need one entry per row")

    @property
    def cognition(self) -> float:
        """Test accuracy at the selected layer."""
        return float(self.test_acc[self.layers.index(self.best_layer)])

    def summary(self) -> str:
        how = (
            "chosen on validation items"
            if self.select == "validation"
            else "chosen on the test items (optimistic)"
        )
        i = self.layers.index(self.best_layer)
        return (
            f"Cognition of {self.model_name or 'the model'} on {self.dataset}: {self.probe} probe, "
            f"{'PCA ' + str(self.pca_dim) if self.pca_dim else 'raw states'}, "
            f"{self.n_train}/{self.n_val}/{self.n_test} train/val/test items\n"
            f"  best layer {self.best_layer} ({how}): test accuracy {self.cognition:.3f} "
            f"(chance {self.chance:.3f}, shuffled labels {float(self.shuffled_acc[i]):.3f})\n"
            f"  max over layers {float(self.test_acc.max()):.3f}, "
            f"mean shuffled {float(self.shuffled_acc.mean()):.3f}"
        )

    def plot(self, ax: Any = None) -> Any:

        fig, ax = viz.axes(ax, figsize=(6, 3.5))
        ax.plot(self.layers, self.test_acc.tolist(), "o-", label="test")
        if not bool(torch.isnan(self.val_acc).all()):
            ax.plot(self.layers, self.val_acc.tolist(), ".--", alpha=0.6, label="validation")
        ax.plot(
            self.layers, self.shuffled_acc.tolist(), "x:", color="grey", label="shuffled labels"
        )
        ax.axhline(self.chance, color="black", lw=0.8, ls="--", label="chance")
        ax.axvline(self.best_layer, color="tab:red", lw=0.8, alpha=0.5)
        ax.set_xlabel("layer (resid_post)")
        ax.set_ylabel("probe accuracy")
        ax.set_title(f"{self.model_name} / {self.dataset}")
        ax.legend(fontsize=7)
        return fig

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(
            dict(
                layer=list(self.layers),
                test_acc=self.test_acc.tolist(),
                val_acc=self.val_acc.tolist(),
                train_acc=self.train_acc.tolist(),
                shuffled_acc=self.shuffled_acc.tolist(),
            )
        )


# ---------------------------------------------------------------- the pieces (tested alone)


def split_items(
    n_items: int, *, test_fraction: float, val_fraction: float, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Seeded train / validation / test item indices (each sorted)."""
    if not 0 < test_fraction < 1 or not 0 <= val_fraction < 1:
        raise OutOfRangeError(
            f"test_fraction must be in (0, 1) and val_fraction in [0, 1), got "
            f"{test_fraction}, {val_fraction}"
        )
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n_items))
    n_test = math.ceil(test_fraction * n_items)
    n_val = round(val_fraction * n_items) if val_fraction else 0
    n_val = max(n_val, 1) if val_fraction else 0
    test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    if len(train) < 2 or len(test) < 1:
        raise EmptyInputError(
            f"{n_items} item(s) leave {len(train)} for training and {len(test)} for testing; "
            "the probe needs at least 2 training items and 1 test item: pass more items"
        )
    return train.sort().values, val.sort().values, test.sort().values


def pca_basis(
    X: Float[Tensor, "layer row d"], k: int
) -> tuple[Float[Tensor, "layer d"], Float[Tensor, "layer d k"]]:
    """Mean and top-``k`` principal directions of each layer's rows (SVD of the centred rows)."""
    mean = X.mean(1)  # (layer, d)
    _, _, vh = torch.linalg.svd(X - mean[:, None], full_matrices=False)  # (layer, r, d)
    return mean, vh[:, :k].transpose(1, 2)


def _features(X: Tensor, train_rows: Tensor, pca_dim: int | None) -> tuple[Tensor, int]:
    """PCA (fit on training rows), then z-scores with training statistics; float64."""
    X = X.double()
    k = 0
    if pca_dim:
        k = min(pca_dim, len(train_rows) - 1, X.shape[-1])
        mean, basis = pca_basis(X[:, train_rows], k)
        X = torch.einsum("lnd,ldk->lnk", X - mean[:, None], basis)  # (layer, row, k)
    mu = X[:, train_rows].mean(1, keepdim=True)
    sd = X[:, train_rows].std(1, keepdim=True, unbiased=False).clamp(min=1e-8)
    return (X - mu) / sd, k


def fit_ovr(
    X_train: Float[Tensor, "layer n k"], y: Int[Tensor, " n"], n_classes: int, *, C: float
) -> tuple[Float[Tensor, "class layer k"], Float[Tensor, "class layer"]]:
    """One-vs-rest balanced L2 logistic regressions; a class absent (or alone) gets b = -inf."""
    L, _, k = X_train.shape
    W = torch.zeros(n_classes, L, k, dtype=torch.float64)
    B = torch.full((n_classes, L), -math.inf, dtype=torch.float64)
    for c in range(n_classes):
        pos = y == c
        if 0 < int(pos.sum()) < len(y):
            W[c], B[c] = fit_l2(X_train, pos, C=C, balanced=True)
    return W, B


# ---------------------------------------------------------------- the analysis


@checked
def probe_cognition(
    model: Model,
    dataset: MCQDataset,
    *,
    probe: ProbeKind = "letter",
    pca_dim: int | None = 64,
    C: float | int = 1.0,
    test_fraction: float = 0.3,
    val_fraction: float = 0.2,
    select: Select = "validation",
    seed: int = 0,
    batch_size: int = 16,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> CognitionProbe:
    """Fit a linear probe for the right answer at every layer and score it on held-out items.

    See the module docstring for the procedure. ``pca_dim=None`` probes the raw states; a
    ``pca_dim`` larger than the training rows allow is reduced to ``n_train_rows - 1``.
    ``out=`` keeps the hidden states on disk (resumable, ``collect_activations``).
    """
    if not isinstance(dataset, MCQDataset):
        raise ArgumentTypeError(f"dataset must be an MCQDataset (load_mcq), not {type(dataset)}")
    if probe not in get_args(ProbeKind):
        raise ArgumentError(f"probe must be one of {get_args(ProbeKind)}, not {probe!r}")
    if select not in get_args(Select):
        raise ArgumentError(f"select must be one of {get_args(Select)}, not {select!r}")
    if pca_dim is not None and pca_dim < 1:
        raise OutOfRangeError(f"pca_dim must be >= 1 or None, got {pca_dim}")
    if not C > 0:
        raise OutOfRangeError(f"C must be > 0, got {C}")
    if len(dataset) < 3:
        raise EmptyInputError(
            f"dataset {dataset.name!r} has {len(dataset)} item(s): a held-out probe needs at "
            "least 3 (2 to train, 1 to test)"
        )
    vf = val_fraction if select == "validation" else 0.0
    train, val, test = split_items(
        len(dataset), test_fraction=test_fraction, val_fraction=vf, seed=seed
    )
    answers = torch.tensor([it.answer for it in dataset])
    n_choices = torch.tensor([len(it.choices) for it in dataset])
    if probe == "letter":
        texts = [letter_prompt(it) for it in dataset]
        row_item = torch.arange(len(dataset))
        row_option = torch.zeros(len(dataset), dtype=torch.long)
    else:
        texts, items, options = [], [], []
        for i, it in enumerate(dataset):
            for o, option in enumerate(cloze_options(it)):
                texts.append(cloze_context(it) + option)
                items.append(i)
                options.append(o)
        row_item, row_option = torch.tensor(items), torch.tensor(options)
    hooks = hook_names(model, "resid_post")
    acts = collect_activations(
        model,
        texts,
        hooks=hooks,
        pooling="last",
        batch_size=batch_size,
        max_tokens=None,
        out=Path(out) if out is not None else None,
        progress=progress,
        desc=f"hidden states {dataset.name}",
    )
    X = torch.stack([acts[h].double() for h in hooks])  # (layer, row, d_model)
    rows_of = {
        name: torch.isin(row_item, idx).nonzero().flatten()
        for name, idx in (("train", train), ("val", val), ("test", test))
    }
    F, k = _features(X, rows_of["train"], pca_dim)  # (layer, row, k)

    rng = np.random.default_rng(seed + 1)
    if probe == "letter":
        y = answers
        y_shuffled = answers.clone()
        y_shuffled[train] = answers[train][torch.from_numpy(rng.permutation(len(train)))]
    else:
        y = (row_option == answers[row_item]).long()
        fake = torch.tensor([int(rng.integers(int(n))) for n in n_choices])
        y_shuffled = (row_option == fake[row_item]).long()

    def accuracy(labels: Tensor) -> dict[str, Tensor]:
        tr = rows_of["train"]
        n_cls = int(n_choices.max()) if probe == "letter" else 2
        W, B = fit_ovr(F[:, tr], labels[tr], n_cls, C=float(C))
        logits = torch.einsum("lrk,clk->lrc", F, W) + B.T[:, None]  # (layer, row, class)
        if probe == "letter":
            valid = torch.arange(n_cls)[None, :] < n_choices[:, None]  # (item, class)
            logits = logits.masked_fill(~valid[None], -math.inf)
            pred = logits.argmax(-1)  # (layer, item)
        else:
            score = logits[..., 1] - logits[..., 0]  # (layer, row)
            per_item = torch.full(
                (len(hooks), len(dataset), int(n_choices.max())), -math.inf, dtype=torch.float64
            )
            per_item[:, row_item, row_option] = score
            pred = per_item.argmax(-1)  # (layer, item)
        right = (pred == answers[None]).double()  # (layer, item)
        return {
            name: right[:, idx].mean(1) if len(idx) else torch.full((len(hooks),), math.nan)
            for name, idx in (("train", train), ("val", val), ("test", test))
        }

    real, shuffled = accuracy(y), accuracy(y_shuffled)
    chooser = real["val"] if select == "validation" else real["test"]
    best = int(torch.nan_to_num(chooser, nan=-1.0).argmax())
    # 2-d PCA of the states at the best layer (fit on the training rows), for the figure
    Xb = X[best : best + 1]
    mean, basis = pca_basis(Xb[:, rows_of["train"]], 2)
    proj = torch.einsum("lnd,ldk->lnk", Xb - mean[:, None], basis)[0]
    label = answers[row_item] if probe == "letter" else y
    return CognitionProbe(
        model_name=str(getattr(model.cfg, "model_name", "")),
        dataset=dataset.name,
        probe=probe,
        select=select,
        pca_dim=k,
        layers=tuple(range(len(hooks))),
        test_acc=real["test"].float(),
        val_acc=real["val"].float(),
        train_acc=real["train"].float(),
        shuffled_acc=shuffled["test"].float(),
        chance=float((1.0 / n_choices[test].double()).mean()),
        best_layer=best,
        n_train=len(train),
        n_val=len(val),
        n_test=len(test),
        projection=proj.float(),
        projection_label=label,
        projection_is_test=torch.isin(row_item, test).long(),
    )
