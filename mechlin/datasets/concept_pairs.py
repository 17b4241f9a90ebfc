"""The shipped counterfactual word pairs of linear concept directions (``data/concepts.json``).

29 concepts in Park et al.'s categories (inflections, derivations, gender, capitalization,
thing -> part, thing -> color, animal -> young, language pairs, country -> capital and
country -> language), written by ``scripts/build_concept_pairs.py``; sources and licences in
``data/README.md``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

from mechlin._checks import checked
from mechlin.errors import ConceptPairError


@dataclass(frozen=True)
class Concept:
    """A shipped concept: its counterfactual word pairs, category and source."""

    name: str
    category: str
    source: str
    pairs: tuple[tuple[str, str], ...]


@lru_cache(maxsize=1)
def shipped_concepts() -> dict[str, Concept]:
    text = files("mechlin.datasets").joinpath("data/concepts.json").read_text("utf-8")
    return {
        c["name"]: Concept(c["name"], c["category"], c["source"], tuple(map(tuple, c["pairs"])))
        for c in json.loads(text)["concepts"]
    }


@checked
def load_concepts(names: Sequence[str] | None = None) -> dict[str, Concept]:
    """The shipped concepts (all, or those named), e.g. ``load_concepts(["male -> female"])``.

    >>> concepts = load_concepts()
    >>> len(concepts) >= 12 and ("king", "queen") in concepts["male -> female"].pairs
    True
    """
    shipped = shipped_concepts()
    if names is None:
        return dict(shipped)
    return {name: shipped[_check_name(name, shipped)] for name in names}


def _check_name(name: str, shipped: Mapping[str, Concept]) -> str:
    if name not in shipped:
        close = difflib.get_close_matches(name, list(shipped), n=3)
        raise ConceptPairError(
            f"no shipped concept named {name!r}. Closest: {close}; all: {sorted(shipped)}. "
            "Or pass your own pairs as {name: [(base, target), ...]}."
        )
    return name
