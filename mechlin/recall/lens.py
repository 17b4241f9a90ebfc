"""Logit lens of one answer: its rank and probability when each layer's residual stream is read out.

The logit lens (nostalgebraist 2020) applies the model's final norm and unembedding to the
residual stream before every layer and after the last one, asking "what would the model predict
if it stopped here?". This module wraps TransformerLens's ``logit_lens`` for the common
question of factual-recall work: from which layer on is the answer the model's top guess?
Pitfall: early layers are not trained to be read this way, so low early ranks are a lower bound
on what the state encodes, not a measurement of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechlin import viz
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.errors import ArgumentError
from mechlin.results import Result
from mechlin.tokens import answer_token, answer_tokens


@dataclass(frozen=True)
class AnswerLens(Result):
    """Rank and probability of the answer token read from the residual stream at each layer."""

    ranks: Int[Tensor, " n_entries"]  # 0 = top-1
    probs: Float[Tensor, " n_entries"]
    labels: tuple[str, ...]  # "0_pre", ..., "final_post"
    prompt: str
    answer: str
    answer_token: str
    answer_is_multi_token: bool

    def __post_init__(self) -> None:
        if not len(self.ranks) == len(self.probs) == len(self.labels):
            raise ArgumentError("ranks, probs and labels must have one entry per layer")

    @property
    def first_top1_layer(self) -> int | None:
        """Index of the first entry where the answer is the top-1 token (None if never)."""
        hits = (self.ranks == 0).nonzero()
        return int(hits[0]) if len(hits) else None

    def plot(self, ax: Any = None) -> Any:
        """Rank (log scale) of the answer per layer; returns the figure."""
        fig, ax = viz.axes(ax, figsize=(7, 3))
        ax.plot(range(len(self.ranks)), (self.ranks + 1).tolist(), marker="o")
        ax.set_yscale("log")
        ax.invert_yaxis()
        ax.set_xticks(range(len(self.labels)), self.labels, rotation=90, fontsize=7)
        ax.set_ylabel(f"rank of {self.answer_token!r} (1 = top)")
        ax.set_title(f"logit lens: {self.prompt!r}", fontsize=9)
        fig.tight_layout()
        return fig


@checked
@torch.no_grad()
def answer_lens(
    model: Model,
    prompt: str,
    answer: str,
    *,
    multi_token: Literal["error", "first"] = "first",
) -> AnswerLens:
    """Logit-lens rank and probability of ``answer`` at every layer for ``prompt``.

    A multi-token answer is scored by its first token when ``multi_token="first"`` (the
    default), and the result records it (``answer_is_multi_token``).
    """
    from transformer_lens.tools.analysis import logit_lens  # noqa: PLC0415

    target = answer_token(model, answer, multi_token=multi_token)
    tokens = model.to_tokens(prompt)
    result = logit_lens(model, tokens, targets=target, return_type="probs")
    ranks = result.rank_trajectory(target)[:, 0]  # [entries, batch=1] -> [entries]
    probs = result.values[:, 0, 0]
    return AnswerLens(
        ranks=ranks.cpu(),
        probs=probs.float().cpu(),
        labels=tuple(result.labels),
        prompt=prompt,
        answer=answer,
        answer_token=model.tokenizer.decode([target]),
        answer_is_multi_token=len(answer_tokens(model, answer)) > 1,
    )
