"""Subject enrichment (Geva et al. 2023): how many subject attributes a hidden state encodes.

The residual stream at a position is projected to the vocabulary at every layer (final norm +
unembedding by default; ``apply_norm=False`` projects the raw state, as the original did with
E); of the top ``top_k`` (500) tokens, stopwords and tokens of <= 2 characters are dropped and
the first ``keep`` (50) kept; the *attributes rate* is the share of those found in the
subject's attribute token set. Geva et al. find it rises through early-middle layers at the
last subject token (to ~50%) and stays low at other positions. The sublayer-knockout variant
zeroes the MLP (or attention) outputs of a window of layers and measures how much the rate at a
later layer drops: the MLPs of early layers do most of the enrichment.

Attribute sets may come from any source (a mapping subject -> attribute words). mechlin ships
one built from a real knowledge base (``mechlin.datasets.countries.country_attributes``). An
attribute word contributes the tokens of " word" and "word" that survive the same filter.

``keep`` caps the tokens taken from the ``top_k``, so it must not exceed ``top_k`` (nor the
vocabulary): ``ArgumentError``, since no state could have ``keep`` tokens counted. A ``top_k``
beyond the model's vocabulary reads the whole vocabulary (the default 500 on a smaller toy
vocabulary); the result records the number read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechlin import sites, support, viz
from mechlin._checks import checked
from mechlin._stats import mean_and_se
from mechlin._types import Model
from mechlin.datasets.facts import Fact, FactLike, as_facts
from mechlin.errors import ArgumentError, EmptyInputError
from mechlin.results import Result
from mechlin.runners import Item, Runner, as_runner
from mechlin.tokens import find_subject_span

POSITIONS = ("first subject token", "last subject token", "first subsequent token", "last token")


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    return frozenset(
        files("mechlin.datasets").joinpath("data/stopwords_en.txt").read_text().split()
    )


def _keep_token(text: str) -> bool:
    word = text.strip().lower()
    return len(word) > 2 and word not in stopwords()


def attribute_token_ids(model: Model, words: Iterable[str]) -> set[int]:
    """Token ids of the attribute words (with and without a leading space), filtered."""
    ids: set[int] = set()
    for phrase in words:
        for word in phrase.replace("-", " ").split():
            for text in (" " + word, word):
                for i in model.tokenizer(text, add_special_tokens=False)["input_ids"]:
                    if _keep_token(model.tokenizer.decode([i])):
                        ids.add(i)
    return ids


@dataclass(frozen=True)
class AttributesRate(Result):
    """Mean attributes rate per position kind and layer (with its standard error)."""

    rate: Float[Tensor, "position layer"]
    se: Float[Tensor, "position layer"]
    positions: tuple[str, ...]
    n_facts: int  # facts measured
    skipped: tuple[
        str, ...
    ]  # subjects with no usable attribute tokens (reported, not dropped silently)
    top_k: int  # projected tokens read per state: top_k, or the vocabulary size if smaller
    keep: int
    apply_norm: bool

    def plot(self, ax: Any = None) -> Any:
        """Attributes rate by layer, one curve per position, 95% bands; returns the figure."""
        fig, ax = viz.axes(ax, figsize=(6, 3.5))
        layers = range(self.rate.shape[1])
        for p, name in enumerate(self.positions):
            m, e = 100 * self.rate[p], 196 * self.se[p]
            ax.plot(layers, m.numpy(), label=name)
            ax.fill_between(layers, (m - e).numpy(), (m + e).numpy(), alpha=0.2)
        ax.set_xlabel("layer")
        ax.set_ylabel("attributes rate (%)")
        ax.set_title(f"Subject enrichment ({self.n_facts} facts)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def _tokens_read(model: Model, function: str, top_k: int, keep: int) -> int:
    """How many projected tokens each state's rate reads (``top_k``, at most the vocabulary);
    raises ``ArgumentError`` where ``keep`` could never be reached."""
    if keep > top_k:
        raise ArgumentError(
            f"{function}(): keep={keep} must be <= top_k={top_k}: keep counts the tokens kept "
            f"from the top {top_k} projected tokens (after dropping stopwords and tokens of <= 2 "
            "characters), so no state could have more; raise top_k or lower keep"
        )
    d_vocab = int(model.cfg.d_vocab)
    if keep > d_vocab:
        raise ArgumentError(
            f"{function}(): keep={keep} exceeds the model's vocabulary ({d_vocab} tokens): no "
            f"state could have {keep} tokens kept; pass keep <= {d_vocab}"
        )
    return min(top_k, d_vocab)


def _rate(
    model: Model, resid: Tensor, attr: set[int], top_k: int, keep: int, apply_norm: bool
) -> Tensor:
    """Attributes rate of each vector in ``resid`` [..., d_model] -> [...]."""
    logits = sites.unembed(model, resid, apply_norm=apply_norm)
    k = min(top_k, logits.shape[-1])
    top = logits.topk(k, dim=-1).indices.reshape(-1, k).tolist()
    rates = []
    for row in top:
        kept = [i for i in row if _keep_token(model.tokenizer.decode([i]))][:keep]
        rates.append(sum(i in attr for i in kept) / max(1, len(kept)))
    return torch.tensor(rates).reshape(resid.shape[:-1])


def _prepare(
    model: Model, facts: Iterable[Any], attributes: Mapping[str, Iterable[str]]
) -> tuple[list[tuple[Fact, set[int]]], list[str]]:
    items = as_facts(facts)
    if not attributes:
        raise EmptyInputError(
            "the attribute mapping is empty: pass subject -> attribute words, e.g. "
            "mechlin.datasets.countries.country_attributes()"
        )
    usable, skipped = [], []
    for fact in items:
        ids = attribute_token_ids(model, attributes.get(fact.subject, ()))
        (usable.append((fact, ids)) if ids else skipped.append(fact.subject))
    if not usable:
        raise EmptyInputError(
            f"none of the {len(items)} subjects has attribute tokens (subjects missing from "
            f"the mapping or with only stopwords/short words): {sorted(set(skipped))[:10]}"
        )
    return usable, skipped


@torch.no_grad()
def _rate_fact(model: Model, payload: tuple[Fact, set[int], int, int, bool]) -> Tensor:
    """One fact's attributes rate at the four positions and every layer: (position, layer)."""
    fact, attr, top_k, keep, apply_norm = payload
    names = sites.hook_names(model, "resid_post")
    tokens = model.to_tokens(fact.prompt)
    n_pos = tokens.shape[1]
    s0, s1 = find_subject_span(model, fact.prompt, fact.subject)
    pos = [s0, s1 - 1, min(s1, n_pos - 1), n_pos - 1]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    resid = torch.stack([cache[n][0, pos] for n in names], dim=1)  # (position, layer, d)
    return _rate(model, resid, attr, top_k, keep, apply_norm)


@checked
@torch.no_grad()
def attributes_rate(
    model: Model,
    facts: Iterable[FactLike],
    attributes: Mapping[str, Iterable[str]],
    *,
    top_k: int = 500,
    keep: int = 50,
    apply_norm: bool = True,
    progress: bool = True,
    runner: Runner | None = None,
) -> AttributesRate:
    """Attributes rate of ``resid_post`` at every layer at four positions, averaged over facts.

    ``keep`` <= ``top_k`` (see the module docstring); a ``top_k`` beyond the vocabulary reads
    all of it. ``runner=mechlin.RayRunner(...)`` computes the facts on Ray workers (the same
    rates).
    """
    top_k = _tokens_read(model, "attributes_rate", top_k, keep)
    usable, skipped = _prepare(model, facts, attributes)
    work = [
        Item(f"fact-{i:06d}", (fact, attr, top_k, keep, apply_norm))
        for i, (fact, attr) in enumerate(usable)
    ]
    found = as_runner(runner).map(
        model, _rate_fact, work, progress=progress, desc="attributes rate"
    )
    per_fact = [found[w.key] for w in work]
    stack = torch.stack(per_fact)  # (fact, position, layer)
    rate, se = mean_and_se(stack)
    return AttributesRate(
        rate=rate,
        se=se,
        positions=POSITIONS,
        n_facts=stack.shape[0],
        skipped=tuple(skipped),
        top_k=top_k,
        keep=keep,
        apply_norm=apply_norm,
    )


@dataclass(frozen=True)
class SublayerKnockout(Result):
    """Attributes rate at ``at_layer`` (last subject token) with a window of sublayers zeroed."""

    rate: Float[Tensor, " n_windows"]  # mean rate with the window starting at each layer zeroed
    baseline: float  # mean rate with nothing zeroed
    starts: tuple[int, ...]
    sublayer: str
    window: int
    at_layer: int
    n_facts: int

    def plot(self, ax: Any = None) -> Any:
        fig, ax = viz.axes(ax, figsize=(6, 3))
        ax.plot(self.starts, (100 * self.rate).numpy(), marker=".", label=f"{self.sublayer} zeroed")
        ax.axhline(100 * self.baseline, color="grey", ls="--", label="no knockout")
        ax.set_xlabel(f"first layer of the zeroed window ({self.window} layers)")
        ax.set_ylabel(f"attributes rate at layer {self.at_layer} (%)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


@checked
@torch.no_grad()
def sublayer_knockout_rate(
    model: Model,
    facts: Iterable[FactLike],
    attributes: Mapping[str, Iterable[str]],
    *,
    sublayer: Literal["mlp", "attn"] = "mlp",
    at_layer: int | None = None,
    window: int = 10,
    top_k: int = 500,
    keep: int = 50,
    apply_norm: bool = True,
    progress: bool = True,
) -> SublayerKnockout:
    """Zero ``sublayer`` outputs (all positions) in windows [s, s+window) ending before
    ``at_layer`` (default: the last layer) and measure the attributes rate there.

    A ``window`` wider than the ``at_layer + 1`` layers up to ``at_layer`` is narrowed to them
    (one window, every layer zeroed; the result records the width used). ``top_k`` and
    ``keep`` as in ``attributes_rate`` (``keep`` <= ``top_k``).
    """
    support.require(model, "sublayer_knockout")
    top_k = _tokens_read(model, "sublayer_knockout_rate", top_k, keep)
    usable, _ = _prepare(model, facts, attributes)
    n_layers = int(model.cfg.n_layers)
    at = n_layers - 1 if at_layer is None else sites.check_layer(model, at_layer)
    window = min(window, at + 1)
    starts = list(range(0, at - window + 2))
    site: sites.LayerSite = "mlp_out" if sublayer == "mlp" else "attn_out"
    target = sites.hook_name(model, "resid_post", at)
    rates = torch.zeros(len(usable), len(starts) + 1)
    for f, (fact, attr) in enumerate(tqdm(usable, desc="sublayer knockout", disable=not progress)):
        tokens = model.to_tokens(fact.prompt)
        last_subject = find_subject_span(model, fact.prompt, fact.subject)[1] - 1
        rows = [range(0)] + [range(s, s + window) for s in starts]  # row 0: nothing zeroed
        batch = tokens.expand(len(rows), -1)
        hooks: list[tuple[str | Callable[..., Any], Callable[..., Any]]] = []
        for layer in range(at + 1):
            zeroed = torch.tensor([r for r, w in enumerate(rows) if layer in w])
            if len(zeroed):

                def zero(act: Tensor, hook: Any, rows: Tensor = zeroed) -> Tensor:
                    act = act.clone()
                    act[rows.to(act.device)] = 0
                    return act

                hooks.append((sites.hook_name(model, site, layer), zero))
        saved: list[Tensor] = []

        def save(
            act: Tensor, hook: Any, saved: list[Tensor] = saved, pos: int = last_subject
        ) -> None:
            saved.append(act[:, pos].clone())

        hooks.append((target, save))
        model.run_with_hooks(batch, fwd_hooks=hooks, stop_at_layer=at + 1)
        rates[f] = _rate(model, saved[0], attr, top_k, keep, apply_norm)
    mean = rates.mean(0)
    return SublayerKnockout(
        rate=mean[1:],
        baseline=float(mean[0]),
        starts=tuple(starts),
        sublayer=sublayer,
        window=window,
        at_layer=at,
        n_facts=len(usable),
    )
