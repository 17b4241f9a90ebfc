"""Attention knockout: batched rows equal one forward per layer; invariants; clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import mechlin
from mechlin.datasets.facts import Fact
from mechlin.recall.knockout import (
    KnockoutCurve,
    KnockoutCurves,
    attention_knockout,
    knockout_curves,
    knockout_probs,
)
from tests.reference.knockout_ref import reference_knockout

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])  # GQA; sliding window (gemma3)
@pytest.mark.parametrize("block", ["subject", "non_subject", "last", (0, 3, 9)])
@pytest.mark.parametrize("window", [1, 3])
def test_knockout_equals_reference(fixture, block, window, request) -> None:
    model = request.getfixturevalue(fixture)
    curve = attention_knockout(model, PROMPT, SUBJECT, block=block, window=window)
    expected = reference_knockout(
        model, PROMPT, curve.sources, curve.layers, window, curve.answer_id
    )
    with torch.no_grad():
        base = model(PROMPT)[0, -1].float().log_softmax(-1)[curve.answer_id]
    assert torch.allclose(curve.logprob_change, expected - base, atol=1e-5)
    rel = 100 * (expected.exp() - base.exp()) / base.exp()
    assert torch.allclose(curve.relative_change, rel, atol=1e-3)


def test_source_sets_partition_the_prompt(tiny) -> None:
    sets = {
        b: attention_knockout(tiny, PROMPT, SUBJECT, block=b, layers=[0]).sources
        for b in ("subject", "non_subject", "last")
    }
    n_pos = tiny.to_tokens(PROMPT).shape[1]
    assert sorted(sets["subject"] + sets["non_subject"] + sets["last"]) == list(range(n_pos))


def test_empty_knockout_is_the_identity(tiny) -> None:
    # Its rows block nothing: each is the base row's forward at another index of the same
    # batch, so equal to float32 rounding, not bit for bit (a CPU matrix kernel need not round
    # every row of a batch alike): log p to 8 ulps of |log p|, the relative change (100 x the
    # log-probability's) likewise.
    curve = attention_knockout(tiny, PROMPT, SUBJECT, block=[])
    tol = 8 * torch.finfo(torch.float32).eps * max(1.0, abs(math.log(curve.p_base)))
    zeros = torch.zeros_like(curve.relative_change)
    torch.testing.assert_close(curve.logprob_change, zeros, rtol=0, atol=tol)
    torch.testing.assert_close(curve.relative_change, zeros, rtol=0, atol=100 * tol)


def test_blocking_all_but_last_puts_all_attention_on_itself(tiny_gemma) -> None:
    model = tiny_gemma
    n_pos = model.to_tokens(PROMPT).shape[1]
    patterns = []
    name = mechlin.hook_name(model, "attn_pattern", 1)
    with model.hooks(fwd_hooks=[(name, lambda p, hook: patterns.append(p[:, :, -1].clone()))]):
        knockout_probs(model, model.to_tokens(PROMPT), [(range(1, 2), range(n_pos - 1))], 0)
    last_row = patterns[0][0]  # (head, key)
    assert torch.allclose(last_row[:, -1], torch.ones(model.cfg.n_heads))
    assert torch.all(last_row[:, :-1] == 0)


def test_hook_that_does_not_fire_is_an_error(tiny) -> None:
    class SilentAttention:
        """A model whose attention never calls its score hook (e.g. a fused kernel)."""

        def __init__(self, model):
            self._model = model
            self.cfg, self.hook_dict = model.cfg, model.hook_dict

        def run_with_hooks(self, tokens, fwd_hooks):
            return self._model(tokens)

    # The probe finds that an edit of the scores changes nothing, and there is no attention
    # mask to edit instead: refused up front, before any knockout runs.
    with pytest.raises(mechlin.NotSupportedError, match="would silently do nothing"):
        knockout_probs(SilentAttention(tiny), tiny.to_tokens(PROMPT), [(range(0, 2), [1])], 0)


def test_bad_inputs(tiny) -> None:
    with pytest.raises(mechlin.SubjectNotFoundError):
        attention_knockout(tiny, PROMPT, "Louvre")
    with pytest.raises(ValueError, match="last position"):
        attention_knockout(tiny, "I went to see the Eiffel Tower", "Eiffel Tower")
    with pytest.raises((ValueError, TypeError)):
        attention_knockout(tiny, PROMPT, SUBJECT, block="relation")


def test_curve_saves_and_plots(tiny, tmp_path: Path) -> None:
    curve = attention_knockout(tiny, PROMPT, SUBJECT, block="non_subject")
    again = KnockoutCurve.load(curve.save(tmp_path / "k.pt"))
    assert torch.equal(again.relative_change, curve.relative_change)
    assert again.sources == curve.sources and again.block == "non_subject"
    assert curve.plot().axes and "<img" in curve._repr_html_()


def test_dataset_curves_average_single_prompt_curves(tiny, tmp_path: Path) -> None:
    pairs = [(PROMPT, SUBJECT), ("The Space Needle is located in the city of", "Space Needle")]
    with torch.no_grad():
        top = int(tiny("Big Ben is in")[0, -1].argsort()[-2])  # not the model's answer
    unknown = Fact("Big Ben is in", "Big Ben", tiny.tokenizer.decode([top]))
    curves = knockout_curves(tiny, [*pairs, unknown], window=3, progress=False)
    assert curves.n_known == 2 and curves.unknown == ("Big Ben is in",)
    for b, block in enumerate(curves.blocks):
        singles = torch.stack(
            [
                attention_knockout(tiny, p, s, block=block, window=3).relative_change
                for p, s in pairs
            ]
        )
        assert torch.allclose(curves.mean[b], singles.mean(0), atol=1e-4)
        assert torch.allclose(curves.se[b], singles.std(0) / 2**0.5, atol=1e-4)
    again = KnockoutCurves.load(curves.save(tmp_path / "c.pt"))
    assert torch.equal(again.mean, curves.mean)
    assert "largest drop" in curves.summary() and "<img" in curves._repr_html_()
    with pytest.raises(mechlin.EmptyInputError):
        knockout_curves(tiny, [unknown], progress=False)
