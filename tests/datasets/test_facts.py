"""The shipped known_1000 facts and the known-facts filter."""

from __future__ import annotations

import json

import pytest
import torch

import mechlin
from mechlin.datasets.facts import Fact, known_facts, load_known_1000, next_token_logits
from tests.conftest import SHARED_DATA


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
