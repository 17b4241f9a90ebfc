"""Subject enrichment: attributes rate against an explicit loop; sublayer knockout; inputs."""

from __future__ import annotations

import pytest
import torch

import mechlin
from mechlin.datasets.countries import country_attributes, country_facts
from mechlin.recall.enrichment import (
    AttributesRate,
    attribute_token_ids,
    attributes_rate,
    sublayer_knockout_rate,
)

PAIRS = [
    ("The capital of Italy is", "Italy"),
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"),
]


def _own_words(model, prompt, subject, layer, n=20):
    """Attribute words that are, by construction, among the top tokens there."""
    span = mechlin.find_subject_span(model, prompt, subject)
    name = mechlin.hook_name(model, "resid_post", layer)
    with torch.no_grad():
        _, cache = model.run_with_cache(model.to_tokens(prompt), names_filter=[name])
    logits = mechlin.unembed(model, cache[name][0, span[1] - 1])
    return [model.tokenizer.decode([i]).strip() for i in logits.topk(n).indices.tolist()]


def _explicit_rate(model, vector, attr, top_k=500, keep=50):
    logits = mechlin.unembed(model, vector[None])[0]
    kept = []
    for i in logits.argsort(descending=True)[:top_k].tolist():
        word = model.tokenizer.decode([i]).strip().lower()
        if len(word) > 2 and word not in mechlin.recall.enrichment.stopwords():
            kept.append(i)
    kept = kept[:keep]
    return sum(i in attr for i in kept) / max(1, len(kept))


def test_rate_equals_explicit_loop(tiny) -> None:
    attributes = {s: _own_words(tiny, p, s, 1) for p, s in PAIRS}
    result = attributes_rate(tiny, PAIRS, attributes, top_k=100, keep=20, progress=False)
    names = mechlin.hook_names(tiny, "resid_post")
    expected = torch.zeros(len(PAIRS), 4, tiny.cfg.n_layers)
    for f, (prompt, subject) in enumerate(PAIRS):
        attr = attribute_token_ids(tiny, attributes[subject])
        s0, s1 = mechlin.find_subject_span(tiny, prompt, subject)
        n_pos = tiny.to_tokens(prompt).shape[1]
        with torch.no_grad():
            _, cache = tiny.run_with_cache(tiny.to_tokens(prompt), names_filter=names)
        for p, pos in enumerate([s0, s1 - 1, min(s1, n_pos - 1), n_pos - 1]):
            for layer, name in enumerate(names):
                expected[f, p, layer] = _explicit_rate(tiny, cache[name][0, pos], attr, 100, 20)
    assert torch.allclose(result.rate, expected.mean(0), atol=1e-6)
    assert result.rate[1, 1] > 0  # the planted words are found at the last subject token
    fig = result.plot()
    assert len(fig.axes[0].lines) == len(result.positions)  # one curve per position


def test_attribute_tokens_drop_stopwords_and_short_tokens(tiny) -> None:
    ids = attribute_token_ids(tiny, ["the", "of", "Rome"])
    texts = {tiny.tokenizer.decode([i]).strip().lower() for i in ids}
    assert texts and not texts & {"the", "of"} and all(len(t) > 2 for t in texts)


def test_missing_and_empty_attribute_sets(tiny) -> None:
    result = attributes_rate(tiny, PAIRS, {"Italy": ["Rome", "Europe"]}, progress=False)
    assert result.n_facts == 1 and result.skipped == ("Eiffel Tower",)
    with pytest.raises(mechlin.EmptyInputError, match="empty"):
        attributes_rate(tiny, PAIRS, {}, progress=False)
    with pytest.raises(mechlin.EmptyInputError, match="none of the"):
        attributes_rate(tiny, PAIRS, {"Italy": ["of", "a"]}, progress=False)


def test_sublayer_knockout_equals_zeroing_each_window(tiny) -> None:
    attributes = {s: _own_words(tiny, p, s, 2) for p, s in PAIRS}
    result = sublayer_knockout_rate(tiny, PAIRS, attributes, at_layer=2, window=2, progress=False)
    assert result.starts == (0, 1)
    name = mechlin.hook_name(tiny, "resid_post", 2)
    for w, start in enumerate(result.starts):
        rates = []
        for prompt, subject in PAIRS:
            hooks = [
                (mechlin.hook_name(tiny, "mlp_out", layer), lambda a, hook: a * 0)
                for layer in range(start, start + 2)
            ]
            saved: list[torch.Tensor] = []
            hooks.append((name, lambda a, hook, saved=saved: saved.append(a)))
            with torch.no_grad():
                tiny.run_with_hooks(tiny.to_tokens(prompt), fwd_hooks=hooks)
            last = mechlin.find_subject_span(tiny, prompt, subject)[1] - 1
            rates.append(
                _explicit_rate(
                    tiny, saved[0][0, last], attribute_token_ids(tiny, attributes[subject])
                )
            )
        assert result.rate[w].item() == pytest.approx(sum(rates) / len(rates), abs=1e-6)


def test_shipped_country_knowledge_base() -> None:
    attributes = country_attributes()
    assert "Rome" in attributes["Italy"] and "Europe" in attributes["Italy"]
    facts = country_facts()
    capital = [f for f in facts if f.prompt == "The capital of France is"]
    assert capital and capital[0].attribute == "Paris" and capital[0].subject == "France"
    assert len({f.subject for f in facts}) > 200


def test_result_roundtrip(tiny, tmp_path) -> None:
    result = attributes_rate(tiny, PAIRS[:1], {"Italy": ["Rome"]}, progress=False)
    again = AttributesRate.load(result.save(tmp_path / "a.pt"))
    assert torch.equal(again.rate, result.rate) and again.positions == result.positions
