"""Steering: add a direction to the residual stream while the model runs (Park et al. 2024).

``steer(model, vector, layer=..., alpha=...)`` is a context manager: inside it, every forward
pass adds ``alpha * vector`` to the chosen activation at the chosen positions; on leaving it the
hook is gone (it is a TransformerLens ``model.hooks(...)`` scope, so even an exception leaves
no hook behind). Where:

* ``layer="final"``: ``unembed.hook_in``, the hidden state ``lambda(x)`` the unembedding reads
  (after the final norm). This is Park et al.'s intervention ``lambda + alpha * lambda_W``;
  with ``vector = ConceptDirections.steering_vector(name)`` (``lambda_W = Cov^-1/2 g_W``) alpha
  is in *whitened logit units*: the logit difference of any pair (y0, y1) changes by exactly
  ``alpha * g_W @ (g(y1) - g(y0))``, i.e. alpha times that pair's projection on the concept
  (``linearity_test`` shows typical projections: about 5-20 on the bundled models for the
  concepts that pass it). Every other token's logit moves by ``alpha * g_W @ g(y)`` plus a
  shift shared by all tokens; over the vocabulary that has standard deviation alpha.
* ``layer=l`` (an int): ``blocks.{l}.hook_resid_post``, the residual stream after block l.
  Later blocks and the final norm act on the added vector, so alpha has no fixed unit there;
  for a unit-norm residual direction (``mechlin.directions.residual``) alpha is a residual-norm
  distance; compare it with the typical norm of the residual stream at that layer.

``positions`` is ``"all"``, ``"last"`` (the last position of each forward pass, so during
generation every new token is steered) or a list of position indices. alpha = 0 is exactly the
unsteered model.

``steering_sweep`` runs one prompt at many alphas (in one batch) and reports the next-token
log-probabilities of chosen word pairs, e.g. Park's test: steering "Long live the" along
male -> female should raise " queen" over " king" (target) while leaving pairs of other
concepts ("king" -> "King", "king" -> "roi") where they were (off-target).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechlin import sites, support, viz
from mechlin._checks import checked
from mechlin._types import Model
from mechlin.errors import (
    ArgumentError,
    EmptyInputError,
    NotInResultError,
    OutOfRangeError,
)
from mechlin.results import Result
from mechlin.tokens import answer_token, prompt_offset

Positions = Literal["all", "last"] | Sequence[int]


def steering_hook_name(model: Model, layer: int | Literal["final"]) -> str:
    """The hook point ``steer`` writes to: ``unembed.hook_in`` or ``blocks.{l}.hook_resid_post``."""
    if layer == "final":
        if "unembed.hook_in" not in model.hook_dict:
            raise ArgumentError("this model has no unembed.hook_in; steer at an integer layer")
        return "unembed.hook_in"
    if isinstance(layer, str):
        raise ArgumentError(f"layer must be an int or 'final', got {layer!r}")
    return sites.hook_name(model, "resid_post", layer)


def _check_vector(model: Model, vector: Tensor) -> None:
    d = int(model.cfg.d_model)
    if tuple(vector.shape) != (d,):
        raise ArgumentError(
            f"the steering vector must have shape ({d},), got {tuple(vector.shape)}"
        )
    if not torch.isfinite(vector).all():
        raise ArgumentError("the steering vector has non-finite entries")


def _adder(vector: Tensor, alphas: Tensor, positions: Positions) -> Any:
    """A hook adding ``alphas[b] * vector`` to row b (alphas of length 1 broadcast)."""
    if not isinstance(positions, str):
        positions = [int(p) for p in positions]
        if not positions:
            raise EmptyInputError("positions is empty: pass 'all', 'last' or position indices")

    def hook(act: Tensor, hook: Any) -> Tensor:
        add = alphas.to(act.device, act.dtype)[:, None] * vector.to(act.device, act.dtype)
        add = add[:, None, :]  # (batch or 1, 1, d_model)
        if positions == "all":
            return act + add
        act = act.clone()
        if positions == "last":
            act[:, -1:] += add
            return act
        n_pos = act.shape[1]
        bad = [p for p in positions if not -n_pos <= p < n_pos]
        if bad:
            raise OutOfRangeError(
                f"steering positions {bad} are out of range for {n_pos} positions"
            )
        act[:, positions] += add
        return act

    return hook


@checked
@contextmanager
def steer(
    model: Model,
    vector: Float[Tensor, " d_model"],
    *,
    layer: int | Literal["final"],
    alpha: float,
    positions: Positions = "all",
) -> Iterator[Any]:
    """Add ``alpha * vector`` at ``layer`` and ``positions`` to every forward pass inside.

    >>> import mechlin, torch
    >>> model = mechlin.tiny_model(seed=0)
    >>> v = torch.ones(model.cfg.d_model)
    >>> with steer(model, v, layer=1, alpha=0.5) as steered:
    ...     logits = steered(model.to_tokens("The capital of France is"))
    >>> [name for name, hp in model.hook_dict.items() if hp.fwd_hooks]  # nothing left behind
    []
    """
    _check_vector(model, vector)
    support.require(model, "steering")
    name = steering_hook_name(model, layer)
    hook = _adder(vector.detach(), torch.tensor([float(alpha)]), positions)
    with model.hooks(fwd_hooks=[(name, hook)]):
        yield model


@dataclass(frozen=True)
class SteeringSweep(Result):
    """Next-token log-probabilities of word pairs as a steering strength alpha grows."""

    prompt: str
    alphas: Float[Tensor, " alpha"]
    words: tuple[str, ...]
    token_ids: Int[Tensor, " word"]
    logits: Float[Tensor, "alpha word"]  # next-token logits at the last position
    logprobs: Float[Tensor, "alpha word"]
    pairs: tuple[tuple[str, str, str], ...]  # (concept, base word, target word)
    hook: str
    positions: str
    # the model's vocabulary size, which ``token_ids`` are checked against on load (files
    # saved before it was recorded: None, only negative ids refused)
    d_vocab: int | None = None

    def __post_init__(self) -> None:
        shape = (len(self.alphas), len(self.words))
        if tuple(self.logits.shape) != shape or tuple(self.logprobs.shape) != shape:
            raise ArgumentError(f"logits and logprobs must be {shape} (alphas x words)")
        for _, base, target in self.pairs:
            if base not in self.words or target not in self.words:
                raise ArgumentError(f"pair words {base!r}, {target!r} must be among {self.words}")

    @property
    def log_ratios(self) -> Float[Tensor, "alpha pair"]:
        """log p(target) - log p(base) (= the logit difference) per alpha and pair."""
        i0 = [self.words.index(b) for _, b, _ in self.pairs]
        i1 = [self.words.index(t) for _, _, t in self.pairs]
        return self.logits[:, i1] - self.logits[:, i0]

    def crossover(self, concept: str) -> float | None:
        """The smallest alpha (of those swept) at which the target word beats the base word."""
        names = [p[0] for p in self.pairs]
        if concept not in names:
            raise NotInResultError(f"no pair {concept!r}; pairs: {names}")
        ratio = self.log_ratios[:, names.index(concept)]
        order = self.alphas.argsort()
        above = [float(self.alphas[i]) for i in order.tolist() if ratio[i] > 0]
        return above[0] if above else None

    def to_frame(self) -> Any:
        """One row per (alpha, pair): base and target log-probabilities and their difference."""
        import pandas as pd  # noqa: PLC0415

        ratio = self.log_ratios
        rows = []
        for a, alpha in enumerate(self.alphas.tolist()):
            for p, (concept, base, target) in enumerate(self.pairs):
                rows.append(
                    {
                        "alpha": alpha,
                        "concept": concept,
                        "base": base,
                        "target": target,
                        "logprob_base": float(self.logprobs[a, self.words.index(base)]),
                        "logprob_target": float(self.logprobs[a, self.words.index(target)]),
                        "log_ratio": float(ratio[a, p]),
                    }
                )
        return pd.DataFrame(rows)

    def plot(self, fig: Any = None) -> Any:
        """Log-ratio of each pair (left) and word log-probabilities (right) vs alpha."""
        fig, panels = viz.figure(1, 2, fig=fig, figsize=(9, 3.4))
        left, right = panels[0]
        alphas = self.alphas.numpy()
        ratio = self.log_ratios.numpy()
        for p, (concept, base, target) in enumerate(self.pairs):
            left.plot(alphas, ratio[:, p], marker=".", lw=2 if p == 0 else 1,
                      label=f"{concept}: log p({target}) / p({base})")  # fmt: skip
        left.axhline(0, color="grey", lw=0.5)
        left.set_xlabel("alpha")
        left.set_ylabel("log-ratio")
        left.legend(fontsize=6)
        for w, word in enumerate(self.words):
            right.plot(alphas, self.logprobs[:, w].numpy(), label=repr(word))
        right.set_xlabel("alpha")
        right.set_ylabel("log p(next token)")
        right.legend(fontsize=6)
        fig.suptitle(f"Steering {self.prompt!r} at {self.hook} ({self.positions})", fontsize=8)
        fig.tight_layout()
        return fig


@checked
@torch.no_grad()
def steering_sweep(
    model: Model,
    prompt: str,
    vector: Float[Tensor, " d_model"],
    *,
    pairs: Mapping[str, tuple[str, str]],
    alphas: Sequence[float] | Tensor = tuple(i / 10 for i in range(11)),
    layer: int | Literal["final"] = "final",
    positions: Positions = "last",
) -> SteeringSweep:
    """Next-token log-probabilities of ``pairs`` words on ``prompt`` steered at each alpha.

    Args:
        pairs: ``{concept: (base word, target word)}``; the first is the target concept, the
            others off-target controls, e.g. ``{"male -> female": ("king", "queen"),
            "lower -> upper": ("king", "King")}``. Words are scored as one token each with
            a leading space (``MultiTokenAnswerError`` otherwise).
        alphas: steering strengths (see the module docstring for their units); all run in
            one batch.
    """
    if not pairs:
        raise EmptyInputError("pairs is empty: pass {concept: (base word, target word)}")
    alpha = torch.as_tensor(alphas, dtype=torch.float64).flatten()
    if alpha.numel() == 0:
        raise EmptyInputError("alphas is empty: pass the steering strengths to sweep")
    _check_vector(model, vector)
    words = tuple(dict.fromkeys(w for pair in pairs.values() for w in pair))
    ids = torch.tensor([answer_token(model, w) for w in words])
    support.require(model, "steering")
    name = steering_hook_name(model, layer)
    prompt_offset(model, prompt)  # refuses a prompt longer than the context (the last token)
    tokens = model.to_tokens(prompt).expand(len(alpha), -1)
    with model.hooks(fwd_hooks=[(name, _adder(vector.detach(), alpha, positions))]):
        logits = model(tokens)[:, -1].double()  # (alpha, d_vocab)
    logprobs = logits.log_softmax(-1)
    label = positions if isinstance(positions, str) else str(list(positions))
    return SteeringSweep(
        prompt=prompt,
        alphas=alpha,
        words=words,
        token_ids=ids,
        logits=logits[:, ids].float(),
        logprobs=logprobs[:, ids].float(),
        pairs=tuple((c, b, t) for c, (b, t) in pairs.items()),
        hook=name,
        positions=label,
        d_vocab=int(logits.shape[-1]),
    )
