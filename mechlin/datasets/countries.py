"""An offline knowledge base of countries, for factual prompts and subject attribute sets.

``mechlin/datasets/data/countries.json`` was built from the PyPI package ``countryinfo`` 1.0.1 (MIT
licence) by ``scripts/build_country_data.py``: 250 countries with capital, region, subregion,
demonym, languages, currencies, provinces and neighbours. It gives (1) fact prompts whose
answers a model may know ("The capital of France is" -> Paris) and (2) each country's attribute
words, the stand-in for the Wikipedia paragraphs Geva et al. used to measure subject enrichment.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from typing import Any

from mechlin._checks import checked
from mechlin.datasets.facts import Fact
from mechlin.errors import ArgumentError

RELATIONS = {
    "capital": "The capital of {} is",
    "language": "The official language of {} is",
    "continent": "{} is located in the continent of",
    "demonym": "A person from {} is called",
}


@checked
@lru_cache(maxsize=1)
def load_countries() -> tuple[dict[str, Any], ...]:
    """The 250 country records (see the module docstring for the source)."""
    text = files("mechlin.datasets").joinpath("data/countries.json").read_text("utf-8")
    return tuple(json.loads(text))


def _continent(country: dict[str, Any]) -> str:
    if country["region"] == "Americas":
        return "South America" if country["subregion"] == "South America" else "North America"
    return country["region"]


@checked
def country_facts(relations: tuple[str, ...] = ("capital", "language", "continent")) -> list[Fact]:
    """Fact prompts about every country, for the given relations (see ``RELATIONS``)."""
    facts = []
    for c in load_countries():
        answers = {
            "capital": c["capital"],
            "language": c["languages"][0] if c["languages"] else "",
            "continent": _continent(c),
            "demonym": c["demonym"],
        }
        for relation in relations:
            if relation not in RELATIONS:
                raise ArgumentError(f"unknown relation {relation!r}; known: {sorted(RELATIONS)}")
            if answers[relation]:
                prompt = RELATIONS[relation].format(c["name"])
                facts.append(Fact(prompt, c["name"], answers[relation], relation_id=relation))
    return facts


@checked
def country_attributes() -> dict[str, list[str]]:
    """Each country's attribute words: capital, continent, region, demonym, languages, ..."""
    out = {}
    for c in load_countries():
        words = [c["capital"], _continent(c), c["region"], c["subregion"], c["demonym"]]
        words += c["languages"] + c["currencies"] + c["provinces"] + c["neighbours"]
        out[c["name"]] = [w for w in words if w]
    return out
