"""Interchange along a residual direction equals a hand-written reference."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import mechlin
from mechlin.directions.interchange import interchange_along
from mechlin.directions.residual import ResidualDirection, residual_direction
from tests.directions.texts import LABELS, TEXTS
from tests.reference.concepts_ref import reference_interchange

PROMPT = "The capital of France is"


def test_interchange_equals_reference(tiny, tmp_path) -> None:
    direction = residual_direction(tiny, TEXTS, LABELS, layer=1)
    pairs = [(TEXTS[0], TEXTS[4]), (TEXTS[5], TEXTS[1])]
    result = interchange_along(tiny, direction, pairs, ("Paris", "Rome"))
    ids = [mechlin.answer_token(tiny, w) for w in ("Paris", "Rome")]
    unit = direction.direction
    for p, (base, source) in enumerate(pairs):
        expected = reference_interchange(
            tiny, tiny.to_tokens(base), tiny.to_tokens(source), unit, direction.hook, ids
        )
        assert result.interchanged[p].item() == pytest.approx(expected, abs=1e-4)
        with torch.no_grad():
            logits = tiny(tiny.to_tokens(base))[0, -1]
        assert result.clean[p].item() == pytest.approx(float(logits[ids[1]] - logits[ids[0]]))
    assert not torch.allclose(result.placebo, result.clean)
    again = ResidualDirection.load(direction.save(tmp_path / "d.pt"))
    assert torch.equal(again.direction, direction.direction) and again.texts == direction.texts
    assert "<img" in direction._repr_html_() and "<img" in result._repr_html_()
