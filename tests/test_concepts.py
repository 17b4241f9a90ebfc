"""Concept directions (Park et al.): whitening, directions, and the tests of linearity."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from mechlin.concept_tests import (
    LinearityTest,
    Orthogonality,
    linearity_test,
    orthogonality,
    separability,
)
from mechlin.concepts import (
    ConceptDirections,
    ConceptPairError,
    concept_directions,
    load_concepts,
    unembedding_whitening,
)
from mechlin.errors import EmptyInputError
from tests.reference.concepts_ref import (
    reference_cohens_d,
    reference_directions,
    reference_loo,
    reference_whitening,
)

# Token-id concepts for the tiny models (their 400-token vocabulary has few whole words).
ID_CONCEPTS = {
    "a": [(3, 40), (7, 90), (11, 120), (50, 200), (61, 301)],
    "b": [(5, 6), (8, 9), (100, 101), (250, 251)],
    "c": [(20, 399), (31, 222)],
}


def _stub(gamma: torch.Tensor) -> SimpleNamespace:
    """A model stand-in with just an unembedding (token-id concepts need no tokenizer)."""
    return SimpleNamespace(W_U=gamma.T.contiguous(), cfg=SimpleNamespace(d_model=gamma.shape[1]))


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


def test_shipped_concepts() -> None:
    concepts = load_concepts()
    assert len(concepts) >= 12
    for c in concepts.values():
        assert c.source and c.category and len(c.pairs) >= 7, c.name
        assert all(len(p) == 2 and p[0] != p[1] for p in c.pairs), c.name
    assert "thing -> part" in concepts and ("car", "wheel") in concepts["thing -> part"].pairs
    assert ("France", "Paris") in concepts["country -> capital"].pairs
    assert "countries.json" in concepts["country -> capital"].source
    big = [n for n, c in concepts.items() if len(c.pairs) >= 30]
    assert len(big) >= 20


def test_linearity_equals_reference(tiny) -> None:
    directions = concept_directions(tiny, ID_CONCEPTS)
    result = linearity_test(tiny, directions, n_random=3000, seed=7, chunk=1000)
    w_u = tiny.W_U.detach()
    inv_sqrt = reference_whitening(w_u)[2]
    for c, pairs in enumerate(ID_CONCEPTS.values()):
        loo = result.loo[result.pair_concept == c]
        expected = torch.tensor(reference_loo(w_u, pairs, inv_sqrt), dtype=torch.float64)
        assert torch.allclose(loo.double(), expected, atol=1e-4)
    generator = torch.Generator().manual_seed(7)
    random_pairs = torch.randint(0, 400, (3000, 2), generator=generator)
    gamma = w_u.T.double()
    expected = ((gamma[random_pairs[:, 1]] - gamma[random_pairs[:, 0]]) @ inv_sqrt) @ (
        directions.unit.T
    )
    assert torch.allclose(result.random.double(), expected, atol=1e-4)
    for c in range(3):
        d = reference_cohens_d(
            result.loo[result.pair_concept == c].tolist(), result.random[:, c].tolist()
        )
        assert result.cohens_d[c].item() == pytest.approx(d, rel=1e-6)
    frame = result.to_frame()
    assert list(frame["concept"]) == list(ID_CONCEPTS)


def test_linearity_tells_a_planted_direction_from_random_pairs() -> None:
    gen = torch.Generator().manual_seed(0)
    gamma = torch.randn(3000, 16, generator=gen)
    shift = 3 * torch.randn(16, generator=gen)
    base = list(range(0, 40))
    gamma[1000:1040] = gamma[base] + shift + 0.3 * torch.randn(40, 16, generator=gen)
    planted = [(b, 1000 + i) for i, b in enumerate(base)]
    random = [(int(a), int(b)) for a, b in torch.randint(0, 3000, (40, 2), generator=gen)]
    model = _stub(gamma)
    directions = concept_directions(model, {"planted": planted, "random": random})
    result = linearity_test(model, directions, n_random=20000)
    assert result.passes == {"planted": True, "random": False}
    assert result.failed == ("random",)
    assert result.cohens_d[0] > 3 and abs(result.cohens_d[1]) < 1
    # Whitened random differences have unit variance per coordinate: projections ~ N(0, 2).
    assert result.random.var(0).tolist() == pytest.approx([2, 2], rel=0.05)


def test_orthogonality_and_separability(tiny) -> None:
    causal = concept_directions(tiny, ID_CONCEPTS)
    euclid = concept_directions(tiny, ID_CONCEPTS, inner_product="euclidean")
    result = orthogonality(causal, euclid)
    for kind, d in (("causal", causal), ("euclidean", euclid)):
        g = d.gram
        off = [abs(float(g[i, j])) for i in range(3) for j in range(3) if i != j]
        assert result.mean_abs_off_diagonal[kind] == pytest.approx(sum(off) / len(off))
    with pytest.raises(ValueError, match="causal directions first"):
        orthogonality(euclid, causal)
    # Cov(g) = I, so the correlation of two concepts' scores over the vocabulary *is* their
    # causal inner product; under the Euclidean product it is a different number.
    sep = separability(tiny, causal, "a", "b")
    assert sep.correlation == pytest.approx(float(causal.gram[0, 1]), abs=1e-6)
    sep_e = separability(tiny, euclid, "a", "b")
    gamma = tiny.W_U.detach().T.double()
    expected = (gamma - gamma.mean(0)) @ euclid.unit[:2].T
    assert torch.allclose(sep_e.scores.double(), expected, atol=1e-5)
    assert sep_e.correlation == pytest.approx(float(torch.corrcoef(expected.T)[0, 1]), abs=1e-6)
    assert abs(sep_e.correlation - sep_e.inner_product) > 1e-3
    with pytest.raises(KeyError, match="no concept 'z'"):
        separability(tiny, causal, "a", "z")
    fig = sep.plot()
    assert fig.axes[0].get_xlabel() == "score on a"


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


def test_shipped_json_is_what_the_build_script_writes() -> None:
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("build", root / "scripts/build_concept_pairs.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    shipped = json.loads((root / "mechlin/data/concepts.json").read_text("utf-8"))
    assert shipped == {"concepts": build.build()}
