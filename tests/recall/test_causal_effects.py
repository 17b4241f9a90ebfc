"""Average causal effects: ROME's buckets, counts of unknown facts, and resumable runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mechlin
from mechlin.datasets.facts import Fact, next_token_logits
from mechlin.recall import causal_effects
from mechlin.recall.causal_effects import (
    BUCKETS,
    AverageCausalEffects,
    average_causal_effects,
    bucket_positions,
)
from mechlin.recall.tracing import causal_trace

PROMPTS = [
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"),
    ("The Space Needle is located in the city of", "Space Needle"),
    ("Big Ben is in", "Big Ben"),
    ("The capital of Italy is", "Italy"),
]
KW = dict(kinds=("resid", "mlp"), window=2, noise=2.0, n_samples=3, progress=False)


def _facts(model, n_unknown: int = 1) -> list[Fact]:
    """Facts whose attribute is the model's own top-1 token (known), the last n_unknown not."""
    logits = next_token_logits(model, [p for p, _ in PROMPTS])
    facts = []
    for k, ((prompt, subject), row) in enumerate(zip(PROMPTS, logits, strict=True)):
        top = model.tokenizer.decode([int(row.argmax())])
        other = model.tokenizer.decode([int(row.argsort()[-2])])
        attribute = other if k >= len(PROMPTS) - n_unknown else top
        facts.append(Fact(prompt=prompt, subject=subject, attribute=attribute))
    return facts


def test_bucket_positions() -> None:
    # BOS, The, [Eif fel To wer], is, located, in, the, city, of
    assert bucket_positions((2, 6), 12) == [[2], [3, 4], [5], [6], [7, 8, 9, 10], [11]]
    # one-token subject: first and last subject token are the same token
    assert bucket_positions((1, 2), 4) == [[1], [], [1], [2], [], [3]]
    # subject right before the last token: first subsequent token is the last token
    assert bucket_positions((0, 2), 3) == [[0], [], [1], [2], [], [2]]


def test_average_equals_manual_pooling(tiny) -> None:
    facts = _facts(tiny)
    ace = average_causal_effects(tiny, facts, **KW)
    assert ace.n_facts == 4 and ace.n_known == 3 and ace.unknown == (facts[-1].prompt,)
    for k, kind in enumerate(("resid", "mlp")):
        pooled: list[list[torch.Tensor]] = [[] for _ in BUCKETS]
        for fact in facts[:3]:
            t = causal_trace(
                tiny, fact.prompt, fact.subject, kind=kind, window=2, noise=2.0, n_samples=3
            )
            for b, positions in enumerate(bucket_positions(t.subject_span, len(t.tokens))):
                pooled[b].extend(t.indirect_effect[:, p] for p in positions)
        for b, samples in enumerate(pooled):
            assert int(ace.n_pooled[k, b]) == len(samples)
            if samples:
                stack = torch.stack(samples)
                assert torch.allclose(ace.aie[k, b], stack.mean(0), atol=1e-6)
                if len(samples) > 1:
                    assert torch.allclose(
                        ace.se[k, b], stack.std(0) / len(samples) ** 0.5, atol=1e-6
                    )


def test_interrupted_run_resumes_without_recomputing(
    tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    facts = _facts(tiny, n_unknown=0)
    whole = average_causal_effects(tiny, facts, **KW)
    calls: list[str] = []
    real = causal_effects.causal_trace

    def flaky(model, prompt, *a, **kw):
        if len(calls) == 4:  # two facts x two kinds done, then the run is interrupted
            raise KeyboardInterrupt
        calls.append(prompt)
        return real(model, prompt, *a, **kw)

    monkeypatch.setattr(causal_effects, "causal_trace", flaky)
    with pytest.raises(KeyboardInterrupt):
        average_causal_effects(tiny, facts, out=tmp_path / "run", **KW)
    assert len(list((tmp_path / "run").glob("fact-*.pt"))) == 2
    calls.clear()
    monkeypatch.setattr(
        causal_effects, "causal_trace", lambda *a, **kw: (calls.append(a[1]), real(*a, **kw))[1]
    )
    resumed = average_causal_effects(tiny, facts, out=tmp_path / "run", **KW)
    assert calls == [facts[2].prompt] * 2 + [facts[3].prompt] * 2  # only the missing facts
    assert torch.allclose(resumed.aie, whole.aie) and resumed.ate == pytest.approx(whole.ate)
    with pytest.raises(ValueError, match="other settings"):
        average_causal_effects(tiny, facts, out=tmp_path / "run", **{**KW, "n_samples": 5})


def test_pairs_trace_the_models_own_answer(tiny) -> None:
    ace = average_causal_effects(tiny, PROMPTS[:2], **KW)
    assert ace.n_known == 2 and ace.unknown == ()


def test_counts_and_errors(tiny, tmp_path: Path) -> None:
    with pytest.raises(mechlin.EmptyInputError):
        average_causal_effects(tiny, [], **KW)
    all_unknown = _facts(tiny, n_unknown=len(PROMPTS))
    with pytest.raises(mechlin.EmptyInputError, match="knows none"):
        average_causal_effects(tiny, all_unknown, **KW)


def test_result_roundtrip_and_views(tiny, tmp_path: Path) -> None:
    ace = average_causal_effects(tiny, _facts(tiny), **KW)
    again = AverageCausalEffects.load(ace.save(tmp_path / "ace.pt"))
    assert torch.equal(again.aie, ace.aie) and again.unknown == ace.unknown
    bucket, layer, value = ace.peak("resid")
    assert bucket in BUCKETS and 0 <= layer < tiny.cfg.n_layers and value == ace.aie[0].max()
    assert "known" in ace.summary()
    assert ace.plot().axes and "<img" in ace._repr_html_()
