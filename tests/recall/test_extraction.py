"""Attribute extraction: events equal explicit per-layer and per-head projections."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mechlin
from mechlin.datasets.facts import Fact
from mechlin.recall.extraction import ExtractionRates, extraction_rates, head_outputs
from mechlin.viz import head_patterns_html

PAIRS = [
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"),
    ("The capital of Italy is", "Italy"),
    ("Big Ben is in", "Big Ben"),
]


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])  # gemma3: post-attention norm
def test_heads_sum_to_the_attention_output(fixture, request) -> None:
    model = request.getfixturevalue(fixture)
    names = [mechlin.hook_name(model, s, 1) for s in ("z", "attn_out", "attn_proj_out")]
    with torch.no_grad():
        _, cache = model.run_with_cache(model.to_tokens(PAIRS[0][0]), names_filter=names)
    heads = head_outputs(model, cache, 1)
    assert heads.shape == (1, model.cfg.n_heads, model.cfg.d_model)
    assert torch.allclose(heads.sum(1), cache[names[1]][:, -1], atol=1e-5)


def _rank(model, vector, target):
    logits = mechlin.unembed(model, vector[None])[0]
    return int((logits > logits[target]).sum())


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
def test_events_equal_explicit_projections(fixture, request) -> None:
    model = request.getfixturevalue(fixture)
    rates = extraction_rates(model, PAIRS, progress=False)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    for i, (prompt, _) in enumerate(PAIRS):
        with torch.no_grad():
            logits, cache = model.run_with_cache(model.to_tokens(prompt))
        pred = int(logits[0, -1].argmax())
        for layer in range(n_layers):
            attn = cache[mechlin.hook_name(model, "attn_out", layer)][0, -1]
            mlp = cache[mechlin.hook_name(model, "mlp_out", layer)][0, -1]
            assert bool(rates.mhsa_events[i, layer]) == (_rank(model, attn, pred) == 0)
            assert bool(rates.mlp_events[i, layer]) == (_rank(model, mlp, pred) == 0)
            z = cache[mechlin.hook_name(model, "z", layer)][0, -1]  # (head, d_head)
            proj = cache[mechlin.hook_name(model, "attn_proj_out", layer)][0, -1]
            weight = model.blocks[layer].attn.o.original_component.weight
            d_head = z.shape[1]
            for h in range(n_heads):  # explicit: one head's slice of W_O, times the norm gain
                out = z[h] @ weight[:, h * d_head : (h + 1) * d_head].T * (attn / proj)
                assert int(rates.head_rank[i, layer, h]) == _rank(model, out, pred)


def test_unknown_facts_are_counted_and_views_work(tiny, tmp_path: Path) -> None:
    with torch.no_grad():
        second = int(tiny("Big Ben is in")[0, -1].argsort()[-2])
    facts = [*PAIRS[:2], Fact("Big Ben is in", "Big Ben", tiny.tokenizer.decode([second]))]
    rates = extraction_rates(tiny, facts, progress=False)
    assert len(rates.prompts) == 2 and rates.unknown == ("Big Ben is in",)
    assert 0.0 <= rates.mhsa_any <= 1.0 and rates.mhsa_rate.shape == (tiny.cfg.n_layers,)
    again = ExtractionRates.load(rates.save(tmp_path / "e.pt"))
    assert torch.equal(again.head_events, rates.head_events)
    assert "MHSA" in rates.summary() and "<img" in rates._repr_html_()
    heads = [(layer, h) for layer, h, _ in rates.top_heads(2)]
    page = head_patterns_html(tiny, PAIRS[0][0], heads)
    assert "unpkg.com" not in page and "L" in page
    with pytest.raises(mechlin.EmptyInputError):
        extraction_rates(tiny, [facts[2]], progress=False)
