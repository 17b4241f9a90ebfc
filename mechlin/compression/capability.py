"""Compression vs capability: bits per character beside multiple-choice accuracy, across models.

Huang et al. 2024 ("Compression Represents Intelligence Linearly", arXiv 2404.09937) find the
benchmark scores of 30 base models close to linear in their bits per character on texts newer
than the models (Pearson r about -0.95; window 1900, stride 512). ``compression_vs_capability``
measures both on the models or checkpoints given: ``surprisal`` on the same text for every
model, and ``mechlin.cognition.expression_scores`` on the same multiple-choice sets.

**The interval.** A correlation over a handful of models is noisy in two ways: the text and the
questions are samples. The interval is a paired bootstrap (the same resample for every model):
the text is cut into blocks of ``block_bytes`` bytes (a block bootstrap, since neighbouring
tokens are not independent; the default, 8 KB, is about two 1024-token windows of English), each
token counted in the block of its first byte; the items are resampled within each set. With two
models a correlation is +-1 by construction and says nothing; the summary says so. Bits per
character are comparable across tokenizers (tokens are not), which is why Huang et al. use them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mechlin import viz
from mechlin._checks import checked
from mechlin.cognition import expression_scores
from mechlin.compression.bits import count_chars, surprisal
from mechlin.compression.coder import byte_table
from mechlin.datasets import MCQDataset
from mechlin.errors import ArgumentError, ArgumentTypeError, EmptyInputError
from mechlin.models import load_model
from mechlin.results import Result

Metric = Literal["acc", "acc_norm", "letter"]


@dataclass(frozen=True)
class CompressionCapability(Result):
    """Bits per character and accuracy of each model, and their correlation with an interval."""

    model_names: tuple[str, ...]
    dataset_names: tuple[str, ...]
    block_bits: Float[Tensor, "model block"]  # bits the model spent on each text block
    block_chars: Float[Tensor, " block"]  # characters of each block
    correct: Bool[Tensor, "model item"]  # items of every set, one after another
    item_set: tuple[int, ...]  # which set each item comes from (index into dataset_names)
    metric: str
    window: int
    stride: int
    n_boot: int
    seed: int

    def __post_init__(self) -> None:
        n = len(self.model_names)
        if self.block_bits.shape[0] != n or self.correct.shape[0] != n:
            raise ArgumentError("block_bits and correct need one row per model")
        if self.block_bits.shape[1] != self.block_chars.shape[0]:
            raise ArgumentError("block_bits and block_chars disagree on the number of blocks")
        if self.correct.shape[1] != len(self.item_set):
            raise ArgumentError("item_set needs one entry per item")

    @property
    def bits_per_char(self) -> Float[Tensor, " model"]:
        return self.block_bits.double().sum(1) / self.block_chars.double().sum()

    @property
    def accuracy(self) -> Float[Tensor, " model"]:
        return self.correct.double().mean(1)

    @staticmethod
    def _pearson(x: Tensor, y: Tensor) -> float:
        x, y = x - x.mean(), y - y.mean()
        denom = float(x.norm() * y.norm())
        return float((x * y).sum()) / denom if denom > 0 else math.nan

    @property
    def pearson_r(self) -> float:
        return self._pearson(self.bits_per_char, self.accuracy)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Paired bootstrap percentile interval of Pearson r (text blocks and items)."""
        g = torch.Generator().manual_seed(self.seed)
        n_blocks = self.block_chars.shape[0]
        sets = torch.tensor(self.item_set)
        rs = []
        for _ in range(self.n_boot):
            b = torch.randint(n_blocks, (n_blocks,), generator=g)
            items = torch.cat(
                [
                    idx[torch.randint(len(idx), (len(idx),), generator=g)]
                    for idx in (torch.nonzero(sets == s).flatten() for s in sets.unique())
                ]
            )
            bpc = self.block_bits[:, b].double().sum(1) / self.block_chars[b].double().sum()
            acc = self.correct[:, items].double().mean(1)
            rs.append(self._pearson(bpc, acc))
        r = torch.tensor([x for x in rs if not math.isnan(x)], dtype=torch.float64)
        # a resample where every model ties has no correlation; the interval is over the others
        if len(r) < self.n_boot / 2:
            return (math.nan, math.nan)
        lo = float(torch.quantile(r, (1 - level) / 2))
        hi = float(torch.quantile(r, 1 - (1 - level) / 2))
        return (lo, hi)

    def summary(self) -> str:
        lines = [
            f"Bits per character (window {self.window}, stride {self.stride}) vs {self.metric} "
            f"on {', '.join(self.dataset_names)} ({self.correct.shape[1]} items):"
        ]
        for name, bpc, acc in zip(self.model_names, self.bits_per_char, self.accuracy, strict=True):
            lines.append(f"  {name:<24} {float(bpc):.3f} bits/char  {float(acc):.1%}")
        if len(self.model_names) < 3:
            lines.append(
                f"  with {len(self.model_names)} model(s) a correlation is +-1 or undefined by "
                "construction: add models or checkpoints (3 or more) for a meaningful r"
            )
        else:
            lo, hi = self.interval()
            lines.append(
                f"  Pearson r = {self.pearson_r:+.2f} (95% paired bootstrap {lo:+.2f}..{hi:+.2f}, "
                f"{self.n_boot} resamples of text blocks and items); Huang et al. 2024: about "
                "-0.95 over 30 base models"
            )
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        fig, ax = viz.axes(ax)
        x, y = self.bits_per_char.numpy(), self.accuracy.numpy()
        ax.scatter(x, y, color="tab:blue")
        for name, xi, yi in zip(self.model_names, x, y, strict=True):
            ax.annotate(name, (xi, yi), fontsize="small", xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("bits per character (lower: better compression)")
        ax.set_ylabel(self.metric)
        ax.set_title(f"compression vs capability (r = {self.pearson_r:+.2f})")
        return fig

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(
            {
                "model": list(self.model_names),
                "bits_per_char": self.bits_per_char.tolist(),
                self.metric: self.accuracy.tolist(),
            }
        )


def _block_bits(
    model: Any, data: bytes, block_bytes: int, window: int, stride: int, progress: bool
) -> Tensor:
    """The model's bits per block of ``block_bytes`` bytes (a token counts in its first
    byte's block)."""
    s = surprisal(model, data, window=window, stride=stride, progress=progress)
    table = byte_table(model)
    lengths = torch.tensor([len(table.decode([int(i)])) for i in s.token_ids], dtype=torch.long)
    starts = torch.cumsum(lengths, 0) - lengths  # (pos,) first byte of each token
    n_blocks = max(1, math.ceil(len(data) / block_bytes))
    out = torch.zeros(n_blocks, dtype=torch.float64)
    out.index_add_(0, (starts // block_bytes).clamp(max=n_blocks - 1), s.bits.double())
    return out


def _chars_per_block(data: bytes, block_bytes: int) -> Tensor:
    """Characters per block, counted as ``Surprisal.n_chars`` counts them (``count_chars``)."""
    n_blocks = max(1, math.ceil(len(data) / block_bytes))
    return torch.tensor(
        [count_chars(data[i * block_bytes : (i + 1) * block_bytes]) for i in range(n_blocks)],
        dtype=torch.float64,
    )


@checked
def compression_vs_capability(
    models: Mapping[str, Any],
    text: bytes,
    datasets: Sequence[MCQDataset],
    *,
    metric: Metric = "acc_norm",
    window: int = 1024,
    stride: int | None = None,
    block_bytes: int = 8192,
    shots: int = 0,
    n_boot: int = 1000,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> CompressionCapability:
    """Bits per character of ``text`` and ``metric`` on ``datasets`` for each model.

    ``models``: name -> a loaded model, or a name or folder ``load_model`` reads (loaded one
    at a time, so a checkpoint series need not fit in memory at once).
    """
    if not models:
        raise EmptyInputError("compression_vs_capability needs at least one model")
    if not isinstance(text, bytes) or not text:
        raise ArgumentError("text must be non-empty bytes (the same text for every model)")
    if not datasets or not all(isinstance(d, MCQDataset) for d in datasets):
        raise ArgumentTypeError("datasets must be a non-empty sequence of MCQDataset (load_mcq)")
    block_bits, correct = [], []
    for spec in models.values():
        model = (
            load_model(str(spec), device=device) if isinstance(spec, str | os.PathLike) else spec
        )
        stride_used = window if stride is None else stride
        block_bits.append(_block_bits(model, text, block_bytes, window, stride_used, progress))
        rows = []
        for ds in datasets:
            scores = expression_scores(model, ds, shots=shots, progress=progress)
            rows.append(scores.correct(metric))
        correct.append(torch.cat(rows))
    return CompressionCapability(
        model_names=tuple(models),
        dataset_names=tuple(d.name for d in datasets),
        block_bits=torch.stack(block_bits).float(),
        block_chars=_chars_per_block(text, block_bytes).float(),
        correct=torch.stack(correct),
        item_set=tuple(i for i, d in enumerate(datasets) for _ in range(len(d))),
        metric=metric,
        window=window,
        stride=window if stride is None else stride,
        n_boot=n_boot,
        seed=seed,
    )
