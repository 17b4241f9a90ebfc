"""Park et al.'s tests of linearity, orthogonality and separability against references."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from mechlin.directions.concepts import (
    concept_directions,
)
from mechlin.directions.measures import (
    linearity_test,
    orthogonality,
    separability,
)
from tests.reference.concepts_ref import (
    reference_cohens_d,
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
