"""Factual prompts: the ROME ``known_1000`` set shipped with mechlin, and which facts a model knows.

A model *knows* a fact (ROME's and Geva et al.'s filter) when its greedy next token after the
prompt is the first token of the attribute (with its leading space). Analyses of factual recall
run on known facts only, and report how many facts they left out and why.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import torch
from tqdm.auto import tqdm

from mechlin._checks import checked
from mechlin._types import Model
from mechlin.errors import ArgumentError, EmptyInputError
from mechlin.tokens import answer_tokens, input_device


@dataclass(frozen=True)
class Fact:
    """A factual prompt: ``prompt`` states (subject, relation); ``attribute`` is the object.

    An empty ``attribute`` means "whatever the model answers" (no knowledge check).
    """

    prompt: str
    subject: str
    attribute: str
    relation_id: str = ""
    known_id: int = -1

    def __post_init__(self) -> None:
        if self.subject.strip() not in self.prompt:
            raise ArgumentError(f"subject {self.subject!r} is not in prompt {self.prompt!r}")


@checked
def load_known_1000() -> list[Fact]:
    """ROME's 1,209 ``known_1000`` facts (MIT licence, shipped in ``mechlin/datasets/data``)."""
    raw = json.loads(files("mechlin.datasets").joinpath("data/known_1000.json").read_text("utf-8"))
    return [
        Fact(
            prompt=r["prompt"],
            subject=r["subject"],
            attribute=r["attribute"],
            relation_id=r["relation_id"],
            known_id=r["known_id"],
        )
        for r in raw
    ]


@dataclass(frozen=True)
class KnownFacts:
    """Which facts a model knows (greedy next token == first token of the attribute)."""

    known: tuple[Fact, ...]
    unknown: tuple[Fact, ...]
    predictions: tuple[str, ...]  # the model's top-1 token for every fact, in input order
    multi_token_attributes: int  # facts whose attribute is several tokens (judged on the first)

    @property
    def n_known(self) -> int:
        return len(self.known)

    @property
    def n_total(self) -> int:
        return len(self.known) + len(self.unknown)

    def __repr__(self) -> str:
        return (
            f"KnownFacts({self.n_known} of {self.n_total} known; "
            f"{self.multi_token_attributes} attributes are several tokens, judged on the first)"
        )


FactLike = Fact | dict[str, Any] | Sequence[str]  # a Fact, a known_1000 record, or a tuple


def as_facts(facts: Iterable[FactLike]) -> list[Fact]:
    """Normalise ``facts`` (Facts, known_1000 records, (prompt, subject[, attribute]) tuples).

    Raises ``EmptyInputError`` when there are none.
    """
    items = [_as_fact(f) for f in facts]
    if not items:
        raise EmptyInputError("no facts given: pass a non-empty list of facts")
    return items


def is_known(model: Model, fact: Fact, predicted_id: int) -> bool:
    """ROME's filter: the model's greedy next token is the first token of the attribute.

    A fact without an attribute (a (prompt, subject) pair) studies the model's own answer, so it
    always counts as known.
    """
    return not fact.attribute or answer_tokens(model, fact.attribute)[0] == predicted_id


def _as_fact(item: FactLike) -> Fact:
    if isinstance(item, Fact):
        return item
    if isinstance(item, dict):
        missing = [k for k in ("prompt", "subject") if k not in item]
        if missing:
            raise ArgumentError(
                f"a fact record lacks {', '.join(missing)}: each needs prompt and subject "
                f"(and attribute, else the model's own answer is traced); got keys {sorted(item)}"
            )
        return Fact(
            prompt=item["prompt"],
            subject=item["subject"],
            attribute=item.get("attribute", ""),
            relation_id=item.get("relation_id", ""),
            known_id=item.get("known_id", -1),
        )
    if len(item) == 2:  # (prompt, subject): the model's own answer is scored
        prompt, subject = item
        return Fact(prompt=prompt, subject=subject, attribute="")
    prompt, subject, attribute = item
    return Fact(prompt=prompt, subject=subject, attribute=attribute)


@torch.no_grad()
def next_token_logits(
    model: Model, prompts: Sequence[str], *, batch_size: int = 32, progress: bool = False
) -> torch.Tensor:
    """Last-position logits ``[n_prompts, d_vocab]``, batching prompts of equal token length.

    Prompts are grouped by length so that no padding is ever needed (padding changes position
    ids and attention in ways that differ between architectures).
    """
    groups: dict[int, list[int]] = defaultdict(list)
    token_rows = [model.to_tokens(p)[0] for p in prompts]
    for i, row in enumerate(token_rows):
        groups[len(row)].append(i)
    out = torch.empty(len(prompts), model.cfg.d_vocab)
    batches = [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]
    # (equal-length groups, at most batch_size prompts each: the logits of all positions of a
    # batch are materialized, 1.5 GB for 150 Gemma prompts of 10 tokens)
    for idx in tqdm(batches, desc="next-token logits", disable=not progress):
        batch = torch.stack([token_rows[i] for i in idx]).to(input_device(model))
        out[idx] = model(batch)[:, -1].float().cpu()
    return out


@checked
def known_facts(
    model: Model,
    facts: Iterable[Fact | dict[str, Any] | Sequence[str]],
    *,
    progress: bool = True,
) -> KnownFacts:
    """Split ``facts`` into those the model knows and those it does not (first-token match)."""
    items = as_facts(facts)
    logits = next_token_logits(model, [f.prompt for f in items], progress=progress)
    top1 = logits.argmax(-1).tolist()
    known: list[Fact] = []
    unknown: list[Fact] = []
    multi = 0
    for fact, pred in zip(items, top1, strict=True):
        multi += bool(fact.attribute) and len(answer_tokens(model, fact.attribute)) > 1
        (known if is_known(model, fact, pred) else unknown).append(fact)
    predictions = tuple(model.tokenizer.decode([p]) for p in top1)
    return KnownFacts(tuple(known), tuple(unknown), predictions, multi)
