"""Interchange along a residual direction: does the model *use* it? (TransformerLens's tools)

``interchange_along(model, direction, pairs, answers)`` sets each base text's coordinate along a
``ResidualDirection`` to the coordinate of its source text (rank-1 subspace interchange,
TransformerLens ``tools.analysis.interchange.SubspaceInterchange``) and reads the logit
difference of two answers; a norm-matched random direction moved by the same distance
(``NormMatchedPlacebo``) is the placebo. A direction the model uses moves the answer far more
than the placebo. DAS (fitting the subspace by gradient descent) is not wrapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from mechlin import support, viz
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.directions.residual import ResidualDirection, token_position
from mechlin.errors import EmptyInputError
from mechlin.results import Result
from mechlin.tokens import answer_token


@dataclass(frozen=True)
class Interchange(Result):
    """Logit difference (answer1 - answer0) of base texts, clean, interchanged and placebo."""

    clean: Float[Tensor, " pair"]  # base run
    interchanged: Float[Tensor, " pair"]  # base with its coordinate along the direction from source
    placebo: Float[Tensor, " pair"]  # same displacement inside a random direction
    source: Float[Tensor, " pair"]  # the source run itself
    answers: tuple[str, str]
    hook: str

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(
            {k: getattr(self, k).tolist() for k in ("clean", "interchanged", "placebo", "source")}
        )

    def plot(self, ax: Any = None) -> Any:
        """Mean logit difference of each run; returns the figure."""
        fig, ax = viz.axes(ax, figsize=(4, 2.6))
        runs = ("clean", "interchanged", "placebo", "source")
        ax.bar(runs, [float(getattr(self, r).mean()) for r in runs], color="0.5")
        ax.set_ylabel(f"logit {self.answers[1]!r} - {self.answers[0]!r}")
        ax.set_title(f"Interchange along the direction at {self.hook}", fontsize=8)
        fig.tight_layout()
        return fig


@checked
@torch.no_grad()
def interchange_along(
    model: Model,
    direction: ResidualDirection,
    pairs: Sequence[tuple[str, str]],
    answers: tuple[str, str],
    *,
    seed: int = 0,
) -> Interchange:
    """Set each base text's coordinate along ``direction`` to its source text's, and read out.

    Each pair is ``(base, source)``; ``answers`` are the words (one token each with a leading
    space) the model should prefer after a label-0 and a label-1 text. Uses TransformerLens's
    ``SubspaceInterchange`` on the rank-1 basis and ``NormMatchedPlacebo`` (a seeded random
    direction moved by the same distance) at the direction's hook and position.
    """
    from transformer_lens.tools.analysis import interchange as tli  # noqa: PLC0415

    if not pairs:
        raise EmptyInputError("no (base, source) pairs given")
    support.require(model, "steering")
    ids = [answer_token(model, a) for a in answers]
    hook = direction.hook
    position: Literal["last"] | int = (
        "last" if direction.position == "last" else int(direction.position)
    )
    basis = direction.direction[:, None]  # (d_model, 1), orthonormal
    step = tli.SubspaceInterchange(basis)
    placebo = tli.NormMatchedPlacebo(step, tli.random_basis(basis.shape[0], 1, seed))
    out: dict[str, list[float]] = {"clean": [], "interchanged": [], "placebo": [], "source": []}

    def read(t: Tensor) -> Tensor:
        return model(t)[:, -1, ids]  # (batch, 2): the two answers' logits

    for base, source in pairs:
        base_tokens, src_tokens = model.to_tokens(base), model.to_tokens(source)
        for name, tokens in (("clean", base_tokens), ("source", src_tokens)):
            logits = read(tokens)[0]
            out[name].append(float(logits[1] - logits[0]))
        src_pos = torch.tensor([token_position(src_tokens.shape[1], position)])
        src_act = tli.collect_activations(model, hook, src_tokens, read, positions=src_pos)
        base_pos = torch.tensor([token_position(base_tokens.shape[1], position)])
        for name, intervention in (("interchanged", step), ("placebo", placebo)):
            logits = tli.run_with_intervention(
                model, hook, intervention, base_tokens, src_act, read, positions=base_pos
            )[0]
            out[name].append(float(logits[1] - logits[0]))
    return Interchange(
        clean=torch.tensor(out["clean"]),
        interchanged=torch.tensor(out["interchanged"]),
        placebo=torch.tensor(out["placebo"]),
        source=torch.tensor(out["source"]),
        answers=(answers[0], answers[1]),
        hook=hook,
    )
