"""Attention knockout (Geva et al. 2023): which edges into the last position carry the fact.

Block the attention from the last position to a set of source positions, in every head, over a
window of layers around a centre layer l (window 9: layers [l-4, l+4], clipped to the model),
and measure how the probability of the model's answer changes:
relative change = 100 x (p_new - p_base) / p_base. Three source sets tell the stages apart:
the subject positions, the non-subject positions (every earlier position outside the subject)
and the last position itself. Geva et al. find relation (non-subject) edges matter in earlier
layers than subject edges: the relation is propagated first, then the attribute is extracted
from the subject.

Implemented on the pre-softmax scores (``attn.hook_attn_scores``): blocked edges are set to
-inf and the softmax renormalizes over the rest. Where the bridge fires that hook only after
the attention is computed (GPT-J, OPT, GPT-Neo, XGLM: an edit there would change nothing), the
same -inf goes into the attention mask the Hugging Face attention module receives
(``mechlin.support.knockout_route`` proves on the model which of the two reaches the output, and
refuses the model if neither does). (The original code re-normalized post-softmax
weights, and its "block everything" path gave uniform attention rather than none: neither is
copied.) Every hook is checked to have fired; grouped-query and sliding-window attention need
nothing special because scores are per query head after the model's own mask. All centre layers
go through the model in one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from mechlin import sites, support, viz
from mechlin._checks import checked
from mechlin._stats import mean_and_se
from mechlin._types import Model
from mechlin.datasets.facts import Fact, FactLike, as_facts, is_known
from mechlin.errors import ArgumentError, EmptyInputError, MissingHookError
from mechlin.recall.tracing import window_layers
from mechlin.results import Result
from mechlin.runners import Item, Runner, as_runner
from mechlin.tokens import answer_tokens, check_positions, find_subject_span

SourceSet = Literal["subject", "non_subject", "last"]


@dataclass(frozen=True)
class KnockoutCurve(Result):
    """Effect of blocking last-position attention to ``sources`` in a window around each layer."""

    relative_change: Float[Tensor, " n_layers"]  # 100 (p_new - p_base) / p_base, per centre
    logprob_change: Float[Tensor, " n_layers"]  # log p_new - log p_base
    p_base: float
    layers: tuple[int, ...]  # centre layer of each entry
    block: str  # "subject" | "non_subject" | "last" | "positions"
    sources: tuple[int, ...]  # blocked source positions
    window: int
    tokens: tuple[str, ...]
    subject_span: tuple[int, int]
    answer: str
    answer_id: int

    def __post_init__(self) -> None:
        if not len(self.relative_change) == len(self.logprob_change) == len(self.layers):
            raise ArgumentError("relative_change, logprob_change and layers must align")

    def plot(self, ax: Any = None) -> Any:
        """Relative change (%) of p(answer) by centre layer; returns the figure."""
        fig, ax = viz.axes(ax, figsize=(6, 3))
        ax.plot(self.layers, self.relative_change.numpy(), marker=".", label=self.block)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel(f"centre layer (window {self.window})")
        ax.set_ylabel(f"% change of p({self.answer!r})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def summary(self) -> str:
        """The blocked source set, the base probability and the largest drop."""
        worst = int(self.relative_change.argmin())
        return (
            f"attention knockout, block={self.block}: p_base {self.p_base:.4f}; largest drop "
            f"{float(self.relative_change[worst]):.1f}% at layer {self.layers[worst]}"
        )


def source_positions(
    span: tuple[int, int], n_pos: int, block: SourceSet | Sequence[int]
) -> tuple[str, tuple[int, ...]]:
    """The name and the positions of a source set (last position = ``n_pos - 1``)."""
    last = n_pos - 1
    if isinstance(block, str):
        if block == "subject":
            return block, tuple(range(*span))
        if block == "non_subject":
            return block, tuple(p for p in range(last) if not span[0] <= p < span[1])
        if block == "last":
            return block, (last,)
        raise ArgumentError(
            f"block must be 'subject', 'non_subject', 'last' or positions, not {block!r}"
        )
    positions = tuple(sorted(set(check_positions(block, n_pos, what="block positions"))))
    return "positions", positions


def _knockout_hook(rows: Tensor, sources: Tensor, fired: set[int], layer: int) -> Any:
    def hook(scores: Tensor, hook: Any) -> Tensor:
        fired.add(layer)
        scores = scores.clone()
        # (batch, head, query, key): the last query's scores on the blocked keys.
        r = rows.to(scores.device)[:, None]
        scores[r, :, -1, sources.to(scores.device)[None, :]] = float("-inf")
        return scores

    return hook


@torch.no_grad()
def knockout_probs(
    model: Model,
    tokens: Tensor,
    blocked: Sequence[tuple[range, Sequence[int]]],
    answer_id: int,
) -> Tensor:
    """log p(answer) at the last position for one row per (layers, sources) knockout.

    One batch: row i blocks last-position attention to ``blocked[i][1]`` in layers
    ``blocked[i][0]``, through the route ``support.knockout_route`` proved for the model.
    Raises if an attention-score hook did not fire.
    """
    n = len(blocked)
    batch = tokens.expand(n, -1)
    groups_by_layer: dict[int, dict[tuple[int, ...], list[int]]] = {}
    for layer in range(int(model.cfg.n_layers)):
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (layers, sources) in enumerate(blocked):
            if layer in layers and len(sources):
                groups.setdefault(tuple(sources), []).append(i)
        if groups:
            groups_by_layer[layer] = groups
    if support.knockout_route(model) == "mask":
        edits = {
            layer: [(torch.tensor(rows), torch.tensor(sources)) for sources, rows in g.items()]
            for layer, g in groups_by_layer.items()
        }
        with support.mask_knockout(model, edits):
            logits = model(batch)[:, -1].float()
    else:
        hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = []
        fired: set[int] = set()
        for layer, g in groups_by_layer.items():
            name = sites.hook_name(model, "attn_scores", layer)
            for sources, rows in g.items():
                hooks.append(
                    (name, _knockout_hook(torch.tensor(rows), torch.tensor(sources), fired, layer))
                )
        logits = model.run_with_hooks(batch, fwd_hooks=hooks)[:, -1].float()
        if fired != set(groups_by_layer):
            raise MissingHookError(
                f"attention-score hooks of layers {sorted(set(groups_by_layer) - fired)} did "
                "not fire: a knockout would silently do nothing"
            )
    logprobs = logits.log_softmax(-1)[:, answer_id]
    if torch.isnan(logprobs).any():
        raise ArgumentError(
            "a knockout blocked every position the last token may attend to (NaN attention); "
            "leave at least one source unblocked"
        )
    return logprobs


@checked
@torch.no_grad()
def attention_knockout(
    model: Model,
    prompt: str,
    subject: str,
    *,
    block: SourceSet | Sequence[int] = "subject",
    window: int = 9,
    layers: Sequence[int] | None = None,
    answer: str | None = None,
) -> KnockoutCurve:
    """Block last-position attention to ``block`` over a window centred at each layer.

    Args:
        block: ``"subject"``, ``"non_subject"``, ``"last"`` or explicit positions.
        window: layers blocked together around each centre ([l-4, l+4] for 9), clipped.
        layers: centre layers (default: all).
        answer: the scored token; ``None`` = the model's own top-1 (Geva et al.).
    """
    tokens = model.to_tokens(prompt)
    n_pos = tokens.shape[1]
    span = find_subject_span(model, prompt, subject)
    if span[1] >= n_pos:
        raise ArgumentError(
            f"the subject {subject!r} ends at the last position of {prompt!r}: attention "
            "knockout reads the last position, so the prompt must continue after the subject"
        )
    n_layers = int(model.cfg.n_layers)
    centres = (
        list(range(n_layers)) if layers is None else [sites.check_layer(model, x) for x in layers]
    )
    name, sources = source_positions(span, n_pos, block)
    if answer is None:
        answer_id = int(model(tokens)[0, -1].argmax())
    else:
        answer_id = answer_tokens(model, answer)[0]
    rows = [(range(0), ())] + [(window_layers(c, window, n_layers), sources) for c in centres]
    logprobs = knockout_probs(model, tokens, rows, answer_id)
    base, new = logprobs[0], logprobs[1:]
    return KnockoutCurve(
        relative_change=(100 * (new.exp() - base.exp()) / base.exp()).cpu(),
        logprob_change=(new - base).cpu(),
        p_base=float(base.exp()),
        layers=tuple(centres),
        block=name,
        sources=sources,
        window=window,
        tokens=tuple(sites.str_tokens(model, tokens[0])),
        subject_span=span,
        answer=model.tokenizer.decode([answer_id]),
        answer_id=answer_id,
    )


@dataclass(frozen=True)
class KnockoutCurves(Result):
    """Mean relative change (with standard error) per source set and centre layer over facts."""

    mean: Float[Tensor, "block layer"]  # mean of 100 (p_new - p_base) / p_base
    se: Float[Tensor, "block layer"]
    blocks: tuple[str, ...]
    window: int
    n_facts: int
    n_known: int
    unknown: tuple[str, ...]  # prompts left out: the model's top-1 is not the attribute

    def bite(self, block: str) -> tuple[int, float]:
        """(centre layer, mean change) where blocking ``block`` lowers p(answer) the most."""
        row = self.mean[self.blocks.index(block)]
        layer = int(row.argmin())
        return layer, float(row[layer])

    def summary(self) -> str:
        lines = [f"{self.n_known} of {self.n_facts} facts known ({len(self.unknown)} left out)"]
        for block in self.blocks:
            layer, value = self.bite(block)
            lines.append(
                f"blocking {block:11s}: largest drop {value:6.1f}% at centre layer {layer}"
            )
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Geva et al.'s figure: % change of p(answer) per centre layer, 95% bands."""
        fig, ax = viz.axes(ax, figsize=(6, 3.5))
        layers = range(self.mean.shape[1])
        for b, block in enumerate(self.blocks):
            m, e = self.mean[b], 1.96 * self.se[b]
            ax.plot(layers, m.numpy(), label=block)
            ax.fill_between(layers, (m - e).numpy(), (m + e).numpy(), alpha=0.2)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel(f"centre layer (window {self.window})")
        ax.set_ylabel("% change of p(answer)")
        ax.set_title(
            f"Attention knockout from the last position ({self.n_known} facts)", fontsize=9
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


@torch.no_grad()
def _knockout_fact(model: Model, payload: tuple[Fact, tuple[str, ...], int]) -> Tensor | None:
    """One fact's relative change per (block, centre layer); None if the model does not know it."""
    fact, blocks, window = payload
    n_layers = int(model.cfg.n_layers)
    tokens = model.to_tokens(fact.prompt)
    top = int(model(tokens)[0, -1].argmax())
    if not is_known(model, fact, top):
        return None
    n_pos = tokens.shape[1]
    span = find_subject_span(model, fact.prompt, fact.subject)
    if span[1] >= n_pos:
        raise ArgumentError(f"the subject ends at the last position of {fact.prompt!r}")
    rows: list[tuple[range, Sequence[int]]] = [(range(0), ())]
    for block in blocks:
        sources = source_positions(span, n_pos, block)[1]  # type: ignore[arg-type]
        rows += [(window_layers(c, window, n_layers), sources) for c in range(n_layers)]
    p = knockout_probs(model, tokens, rows, top).exp()
    return (100 * (p[1:] - p[0]) / p[0]).reshape(len(blocks), n_layers).cpu()


@checked
def knockout_curves(
    model: Model,
    facts: Iterable[FactLike],
    *,
    blocks: Sequence[SourceSet] = ("subject", "non_subject", "last"),
    window: int = 9,
    progress: bool = True,
    runner: Runner | None = None,
) -> KnockoutCurves:
    """``attention_knockout`` for every known fact and source set, averaged per centre layer.

    Facts whose attribute's first token is not the model's top-1 are left out and listed;
    (prompt, subject) pairs use the model's own answer. ``runner=mechlin.RayRunner(...)``
    computes the facts on Ray workers (the same curves).
    """
    items = as_facts(facts)
    work = [Item(f"fact-{i:06d}", (fact, tuple(blocks), window)) for i, fact in enumerate(items)]
    found = as_runner(runner).map(
        model, _knockout_fact, work, progress=progress, desc="attention knockout"
    )
    records = [found[w.key] for w in work]
    changes = [r for r in records if r is not None]  # (block, layer) per known fact
    unknown = [f.prompt for f, r in zip(items, records, strict=True) if r is None]
    if not changes:
        raise EmptyInputError(f"the model knows none of the {len(items)} facts: nothing to average")
    stack = torch.stack(changes)  # (fact, block, layer)
    mean, se = mean_and_se(stack)
    return KnockoutCurves(
        mean=mean,
        se=se,
        blocks=tuple(blocks),
        window=window,
        n_facts=len(items),
        n_known=stack.shape[0],
        unknown=tuple(unknown),
    )
