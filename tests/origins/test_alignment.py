"""Context (final hidden state) directions vs unembedding directions on real and tiny models."""

from __future__ import annotations

import pytest
import torch

from mechlin import viz
from mechlin.directions import concept_directions
from mechlin.errors import ArgumentError, EmptyInputError
from mechlin.origins import (
    EmbeddingUnembeddingAlignment,
    embedding_unembedding_alignment,
    language_contexts,
    word_contexts,
)

CONTEXTS = {
    "a": (["The city of Paris is", "The capital of France"], ["The Space Needle", "Big Ben is in"]),
    "b": (["Miles Davis plays the"], ["The currency of Japan", "The official language of"]),
    "z": (["The Colosseum is"], ["Toko Yasuda plays"]),  # no unembedding direction: rows only
}


@pytest.fixture(scope="module")
def tiny_dirs(tiny):
    return concept_directions(
        tiny,
        {"a": [(10, 20), (11, 21), (12, 22)], "b": [(30, 40), (31, 41)], "c": [(50, 60), (51, 61)]},
    )


def _lambda(model, texts):
    out = []
    for text in texts:
        _, cache = model.run_with_cache(model.to_tokens(text), names_filter=["unembed.hook_in"])
        out.append(cache["unembed.hook_in"][0, -1].double())
    return torch.stack(out)


def test_alignment_matrix_equals_a_direct_computation(tiny, tiny_dirs) -> None:
    res = embedding_unembedding_alignment(tiny, tiny_dirs, CONTEXTS)
    assert res.alignment.shape == (3, 3)
    assert res.context_concepts == ("a", "b", "z") and res.unembed_concepts == ("a", "b", "c")
    expected_matched = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    assert torch.equal(res.matched, expected_matched)
    assert res.n_contexts.tolist() == [[2, 2], [1, 2], [1, 1]]
    for r, name in enumerate(res.context_concepts):
        base, target = CONTEXTS[name]
        delta = _lambda(tiny, target).mean(0) - _lambda(tiny, base).mean(0)
        white = delta @ tiny_dirs.cov_sqrt  # whitened hidden-state difference
        for c in range(3):
            cos = white @ tiny_dirs.unit[c] / white.norm()
            assert res.alignment[r, c].item() == pytest.approx(cos.item(), abs=1e-6)
    assert res.matched_values.shape == (2,) and res.mismatched_values.shape == (7,)
    assert res.mismatched_mean_abs == pytest.approx(res.mismatched_values.abs().mean().item())


def test_alignment_result_contract(tiny, tiny_dirs, tmp_path) -> None:
    res = embedding_unembedding_alignment(tiny, tiny_dirs, CONTEXTS)
    assert "matched cosine" in res.summary() and "causal" in res.summary()
    assert len(res.to_frame()) == 9
    viz.close(res.plot())
    back = EmbeddingUnembeddingAlignment.load(res.save(tmp_path / "a.pt"))
    assert torch.equal(back.alignment, res.alignment)
    euclid = embedding_unembedding_alignment(
        tiny,
        {"a": [(10, 20), (11, 21)], "b": [(30, 40), (31, 41)]},
        CONTEXTS,
        inner_product="euclidean",
    )
    assert euclid.inner_product == "euclidean"


def test_alignment_bad_input(tiny, tiny_dirs) -> None:
    with pytest.raises(EmptyInputError, match="no concepts"):
        embedding_unembedding_alignment(tiny, [], CONTEXTS)
    with pytest.raises(EmptyInputError, match="both classes"):
        embedding_unembedding_alignment(tiny, tiny_dirs, {"a": (["The city of Paris"], [])})
    with pytest.raises(EmptyInputError, match="contexts is empty"):
        embedding_unembedding_alignment(tiny, tiny_dirs, {})
    with pytest.raises(ArgumentError, match="nothing to match"):
        embedding_unembedding_alignment(tiny, tiny_dirs, {"z": CONTEXTS["z"]})
    with pytest.raises(EmptyInputError):
        word_contexts([])


def test_context_builders() -> None:
    base, target = word_contexts([("king", "queen")], templates=("Say {w}. Say",))
    assert base == ["Say king. Say"] and target == ["Say queen. Say"]
    en, fr = language_contexts(n=5, n_words=4)
    assert len(en) == len(fr) == 5 and all(len(t.split()) <= 4 for t in en + fr)


@pytest.mark.bundled
def test_smollm2_matched_concepts_align_more_than_mismatched(smollm2) -> None:
    names = ["male -> female", "noun -> plural", "lower -> upper"]
    dirs = concept_directions(smollm2, names)
    pairs = {
        n: [p for p, k in zip(dirs.pair_words, dirs.pair_concept.tolist(), strict=True) if k == c][
            :6
        ]
        for c, n in enumerate(dirs.names)
    }
    contexts = {
        n: word_contexts(p, templates=("Word: {w}. Word: {w}. Word:",)) for n, p in pairs.items()
    }
    res = embedding_unembedding_alignment(smollm2, dirs, contexts)
    assert res.matched_values.min() > res.mismatched_values.abs().max()
