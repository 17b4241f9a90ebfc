"""The whole account: dissect_recall composes the pieces, reports, saves and reloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mechlin
from mechlin.datasets.facts import Fact
from mechlin.recall.dissection import RecallDissection, dissect_recall
from mechlin.recall.enrichment import attributes_rate
from mechlin.recall.extraction import extraction_rates
from mechlin.recall.knockout import knockout_curves

PAIRS = [
    ("The capital of Italy is", "Italy"),
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"),
    ("Big Ben is in", "Big Ben"),
]
ATTRS = {"Italy": ["Rome", "Europe", "Italian"], "Eiffel Tower": ["Paris", "France", "iron"]}


def test_dissection_equals_its_pieces(tiny, tmp_path: Path) -> None:
    result = dissect_recall(tiny, PAIRS, attributes=ATTRS, enrichment_window=2, progress=False)
    assert result.n_known == 3
    knock = knockout_curves(tiny, PAIRS, progress=False)
    assert torch.allclose(result.knockout.mean, knock.mean)
    assert torch.equal(
        result.extraction.mhsa_events, extraction_rates(tiny, PAIRS, progress=False).mhsa_events
    )
    attrs = attributes_rate(tiny, PAIRS[:2], ATTRS, progress=False)
    assert result.attributes is not None and torch.allclose(result.attributes.rate, attrs.rate)
    assert result.mlp_knockout is not None and result.mlp_knockout.window == 2
    text = result.summary()
    assert (
        "Relation propagation" in text and "Attribute extraction" in text and "enrichment" in text
    )
    page = result.report(tmp_path / "r.html").read_text()
    assert "Summary" in page and "CircuitsVis.render" in page and "unpkg.com" not in page
    again = RecallDissection.load(result.save(tmp_path / "d.pt"))
    assert torch.equal(again.knockout.mean, result.knockout.mean)
    assert again.attributes is not None and torch.equal(
        again.attributes.rate, result.attributes.rate
    )
    assert again.summary() == text


def test_unknown_facts_are_counted_and_none_known_is_an_error(tiny) -> None:
    with torch.no_grad():
        second = int(tiny("Big Ben is in")[0, -1].argsort()[-2])
    wrong = Fact("Big Ben is in", "Big Ben", tiny.tokenizer.decode([second]))
    result = dissect_recall(
        tiny, [*PAIRS[:2], wrong], attributes=ATTRS, enrichment_window=2, progress=False
    )
    assert (result.n_facts, result.n_known) == (3, 2)
    with pytest.raises(mechlin.EmptyInputError, match="knows none"):
        dissect_recall(tiny, [wrong], progress=False)
