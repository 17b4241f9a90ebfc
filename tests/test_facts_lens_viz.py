"""Facts shipped with the package, the known-facts filter, the answer lens and offline HTML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mechlin
from mechlin.facts import Fact, known_facts, load_known_1000, next_token_logits
from mechlin.lens import AnswerLens, answer_lens
from mechlin.viz import attention_pattern_html, write_report

from .conftest import SHARED_DATA


def test_shipped_known_1000_matches_the_shared_copy() -> None:
    facts = load_known_1000()
    assert len(facts) == 1209
    shared = SHARED_DATA / "facts" / "known_1000.json"
    if shared.exists():  # CI has ../shared beside the checkout; a user's clone may not
        raw = json.loads(shared.read_text())
        assert [f.prompt for f in facts] == [r["prompt"] for r in raw]


def test_fact_rejects_subject_missing_from_prompt() -> None:
    with pytest.raises(ValueError, match="not in prompt"):
        Fact(prompt="The Louvre is in", subject="Eiffel Tower", attribute="Paris")


def test_next_token_logits_batched_equals_one_by_one(tiny: object) -> None:
    prompts = [f.prompt for f in load_known_1000()[:12]]
    batched = next_token_logits(tiny, prompts)
    with torch.no_grad():
        single = torch.stack([tiny(p)[0, -1] for p in prompts])  # type: ignore[operator]
    assert torch.allclose(batched, single, atol=1e-5)


def test_known_facts_splits_and_counts(tiny: object) -> None:
    facts = load_known_1000()[:20]
    logits = next_token_logits(tiny, [f.prompt for f in facts])
    # Make one fact "known" by construction: its attribute is the model's own top-1 token.
    top = tiny.tokenizer.decode([int(logits[0].argmax())])  # type: ignore[attr-defined]
    facts[0] = Fact(prompt=facts[0].prompt, subject=facts[0].subject, attribute=top)
    result = known_facts(tiny, facts, progress=False)
    assert result.n_total == 20
    assert facts[0] in result.known
    assert len(result.predictions) == 20
    with pytest.raises(mechlin.EmptyInputError):
        known_facts(tiny, [])


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
def test_last_lens_entry_is_the_model_output(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    model = request.getfixturevalue(fixture)
    prompt = "The Eiffel Tower is located in the city of"
    lens = answer_lens(model, prompt, "Paris")
    assert len(lens.labels) == model.cfg.n_layers + 1
    paris = mechlin.answer_token(model, "Paris")
    with torch.no_grad():
        probs = model(prompt)[0, -1].softmax(-1)
    assert lens.probs[-1].item() == pytest.approx(probs[paris].item(), abs=1e-5)
    assert int(lens.ranks[-1]) == int((probs > probs[paris]).sum())
    again = AnswerLens.load(lens.save(tmp_path / "lens.pt"))
    assert torch.equal(again.ranks, lens.ranks) and again.labels == lens.labels


def test_attention_html_is_self_contained(tiny: object, tmp_path: Path) -> None:
    page = attention_pattern_html(tiny, "The Eiffel Tower is in Paris", 1, heads=[0, 2])
    assert "unpkg.com" not in page and "import {" not in page  # nothing fetched from a CDN
    assert "CircuitsVis.render" in page and len(page) > 500_000  # the bundle is inlined
    path = write_report(tmp_path / "r.html", "t", [("pattern", page)])
    assert path.read_text().startswith("<!DOCTYPE html>")
