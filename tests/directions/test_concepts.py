"""Concept directions (Park et al.): whitening, directions, pair filtering, results."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from mechlin.directions.concepts import (
    ConceptDirections,
    ConceptPairError,
    concept_directions,
    unembedding_whitening,
)
from mechlin.directions.measures import (
    LinearityTest,
    Orthogonality,
    linearity_test,
    orthogonality,
)
from mechlin.errors import EmptyInputError
from tests.reference.concepts_ref import (
    reference_directions,
    reference_whitening,
)

# Token-id concepts for the tiny models (their 400-token vocabulary has few whole words).
ID_CONCEPTS = {
    "a": [(3, 40), (7, 90), (11, 120), (50, 200), (61, 301)],
    "b": [(5, 6), (8, 9), (100, 101), (250, 251)],
    "c": [(20, 399), (31, 222)],
}


def test_whitening_matches_svd_reference_and_whitens(tiny) -> None:
    mean, sqrt, inv_sqrt = unembedding_whitening(tiny, chunk=97)  # chunks that do not divide
    ref_mean, ref_cov, ref_inv_sqrt = reference_whitening(tiny.W_U.detach())
    assert torch.allclose(mean, ref_mean, atol=1e-12)
    assert torch.allclose(sqrt @ sqrt, ref_cov, atol=1e-10)
    assert torch.allclose(inv_sqrt, ref_inv_sqrt, rtol=1e-8, atol=1e-8)
    g = (tiny.W_U.detach().T.double() - mean) @ inv_sqrt  # (vocab, d_model)
    cov_g = g.T @ g / len(g)
    assert torch.allclose(cov_g, torch.eye(len(cov_g), dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("inner_product", ["causal", "euclidean"])
def test_directions_equal_explicit_loop(tiny_gemma, inner_product) -> None:
    result = concept_directions(tiny_gemma, ID_CONCEPTS, inner_product=inner_product)
    w_u = tiny_gemma.W_U.detach()
    inv_sqrt = reference_whitening(w_u)[2] if inner_product == "causal" else torch.eye(64).double()
    expected = reference_directions(w_u, list(ID_CONCEPTS.values()), inv_sqrt)
    assert result.names == tuple(ID_CONCEPTS)
    assert torch.allclose(result.unit, expected, atol=1e-8)
    assert torch.allclose(result.gram, expected @ expected.T, atol=1e-8)
    assert result.counts == {"a": (5, 0), "b": (4, 0), "c": (2, 0)}
    assert torch.equal(result.pairs("c"), torch.tensor(ID_CONCEPTS["c"]))


def test_causal_norm_is_one_and_embedding_pairs_with_unembedding(tiny) -> None:
    result = concept_directions(tiny, ID_CONCEPTS)
    cov = reference_whitening(tiny.W_U.detach())[1]
    gamma_w = result.unembedding_vectors  # model coordinates
    causal = gamma_w @ torch.linalg.inv(cov) @ gamma_w.T  # <x, y>_C = x^T Cov^-1 y
    assert torch.allclose(causal.diagonal(), torch.ones(3, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(causal, result.gram, atol=1e-8)
    # lambda_W = Cov^-1 gamma_W, so lambda_W . gamma_W = 1 (steering moves the probe by alpha).
    lam = result.embedding_vectors
    assert torch.allclose(lam, gamma_w @ torch.linalg.inv(cov), atol=1e-6 * lam.abs().max())
    assert torch.allclose((lam * gamma_w).sum(-1), torch.ones(3, dtype=torch.float64))
    assert torch.equal(result.steering_vector("b"), lam[1])


def test_word_pairs_keep_single_tokens_and_report_the_rest(tiny) -> None:
    pairs = [("the", "The"), ("Paris", "Rome"), ("Eiffel", "Tower"), ("the", "The"), ("in", "in")]
    result = concept_directions(tiny, {"mixed": pairs}, inner_product="euclidean")
    assert result.pair_words == (("the", "The"), ("Paris", "Rome"))
    assert result.counts == {"mixed": (2, 3)}
    reasons = {(b, t): r for _, b, t, r in result.dropped}
    assert "'Eiffel' is not one token" in reasons[("Eiffel", "Tower")]
    assert reasons[("the", "The")] == "duplicate of an earlier pair"
    assert reasons[("in", "in")] == "base and target are the same token"
    frame = result.to_frame()
    assert len(frame) == 5 and frame["kept"].sum() == 2


def test_too_few_pairs_says_which_were_dropped_and_why(tiny) -> None:
    with pytest.raises(
        ConceptPairError, match=r"(?s)1 usable pair.*'Eiffel' is not one token.*too_few='skip'"
    ):
        concept_directions(tiny, {"x": [("the", "The"), ("Eiffel", "Tower")]})
    skipped = concept_directions(
        tiny, {"x": [("the", "The"), ("Eiffel", "Tower")], **ID_CONCEPTS}, too_few="skip"
    )
    assert skipped.names == tuple(ID_CONCEPTS) and skipped.skipped == ("x",)
    assert ("x", "Eiffel", "Tower") in {d[:3] for d in skipped.dropped}
    assert "skipped" in skipped.summary()


def test_bad_input_errors(tiny) -> None:
    with pytest.raises(ConceptPairError, match="token id 400 is out of range"):
        concept_directions(tiny, {"x": [(1, 400), (2, 3)]})
    with pytest.raises(ConceptPairError, match="no shipped concept named 'male => female'"):
        concept_directions(tiny, ["male => female"])
    with pytest.raises(EmptyInputError, match="no concepts given"):
        concept_directions(tiny, {})
    with pytest.raises(ConceptPairError, match=r"must be \(base, target\)"):
        concept_directions(tiny, {"x": [(1, 2, 3)]})


def test_results_plot_and_roundtrip(tiny, tmp_path) -> None:
    causal = concept_directions(tiny, ID_CONCEPTS)
    euclid = concept_directions(tiny, ID_CONCEPTS, inner_product="euclidean")
    lin = linearity_test(tiny, causal, n_random=500)
    orth = orthogonality(causal, euclid)
    for result, kind in ((causal, ConceptDirections), (lin, LinearityTest), (orth, Orthogonality)):
        again = kind.load(result.save(tmp_path / f"{kind.__name__}.pt"))
        assert again.names == result.names
        assert "<img" in result._repr_html_()
    again = ConceptDirections.load(tmp_path / "ConceptDirections.pt")
    assert torch.equal(again.unit, causal.unit) and again.dropped == causal.dropped
    assert len(orth.plot().axes) == 4  # two heatmaps and their colour bars
    assert sum(ax.has_data() for ax in lin.plot().axes) == 3  # one histogram per concept


@pytest.mark.bundled
def test_smollm2_causal_geometry(smollm2) -> None:
    causal = concept_directions(smollm2, too_few="skip")
    euclid = concept_directions(smollm2, inner_product="euclidean", too_few="skip")
    means = orthogonality(causal, euclid).mean_abs_off_diagonal
    assert means["causal"] < means["euclidean"]
    assert causal.skipped == euclid.skipped and "German -> Spanish" in causal.skipped
    lin = linearity_test(smollm2, causal)
    passes = lin.passes
    assert not passes["thing -> part"]  # Park et al.'s one non-linear concept
    for name in ("verb -> Ved", "noun -> plural", "male -> female", "country -> capital"):
        assert passes[name], name
