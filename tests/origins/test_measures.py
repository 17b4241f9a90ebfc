"""Linearity / orthogonality measures: loop references, and the exact optimum of the theory."""

from __future__ import annotations

import math

import pytest
import torch

from mechlin.origins import (
    LatentConceptModel,
    build_tokens,
    concept_gram,
    differing_pairs,
    expected_loss,
    linearity,
    mean_pairwise_cosine,
)
from mechlin.origins.measures import concept_pairs, random_pair_baseline, split_by_independence
from tests.reference.origins_ref import (
    reference_expected_loss,
    reference_mean_cosine,
    reference_pairs,
)


def test_pairs_and_cosines_equal_loop_references() -> None:
    data = build_tokens(LatentConceptModel(3, seed=0))
    gen = torch.Generator().manual_seed(0)
    vectors = torch.randn(len(data.contexts), 5, generator=gen, dtype=torch.float64)
    for codes, vecs in [(data.tokens, vectors[: len(data.tokens)]), (data.contexts, vectors)]:
        for i in range(3):
            pairs = differing_pairs(codes, i)
            assert sorted(map(tuple, pairs.tolist())) == sorted(reference_pairs(codes, i))
            diffs = vecs[pairs[:, 1]] - vecs[pairs[:, 0]]
            assert mean_pairwise_cosine(diffs) == pytest.approx(reference_mean_cosine(diffs))
        lin = linearity(vecs, concept_pairs(codes))
        assert lin.shape == (3,)
    assert mean_pairwise_cosine(torch.ones(1, 3)) != mean_pairwise_cosine(torch.ones(1, 3))  # NaN


def test_gram_and_independence_split_against_loops() -> None:
    data = build_tokens(LatentConceptModel(4, seed=0))
    g = torch.randn(len(data.tokens), 6, generator=torch.Generator().manual_seed(1)).double()
    gram = concept_gram(g, concept_pairs(data.tokens))
    for i in range(4):
        for j in range(4):
            di = torch.stack([g[b] - g[a] for a, b in reference_pairs(data.tokens, i)]).mean(0)
            dj = torch.stack([g[b] - g[a] for a, b in reference_pairs(data.tokens, j)]).mean(0)
            assert gram[i, j].item() == pytest.approx(float(di @ dj / di.norm() / dj.norm()))
    ind = torch.zeros(4, 4, dtype=torch.bool)
    ind[0, 1] = ind[1, 0] = True
    mi, md = split_by_independence(gram, ind)
    assert mi == pytest.approx(gram[0, 1].abs().item())
    others = [
        gram[i, j].abs().item() for i in range(4) for j in range(i + 1, 4) if (i, j) != (0, 1)
    ]
    assert md == pytest.approx(sum(others) / len(others))


def test_random_pair_baseline_is_near_zero() -> None:
    g = torch.randn(256, 16, generator=torch.Generator().manual_seed(2)).double() + 3.0
    assert abs(random_pair_baseline(g, 2000, seed=0)) < 0.02


def test_expected_loss_equals_a_loop() -> None:
    data = build_tokens(LatentConceptModel(3, seed=1), context_fraction=0.5)
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(int(data.train.sum()), 4, generator=gen).double()
    g = torch.randn(len(data.tokens), 4, generator=gen).double()
    assert expected_loss(f, g, data) == pytest.approx(reference_expected_loss(f, g, data))


def test_log_odds_optimum_in_closed_form_is_exactly_linear() -> None:
    """Independent concepts: f(x)_i = logit(theta_i) (unknown) or +-M (core), g(y) = c(y).

    Then softmax(f . g) is the product of Bernoullis, i.e. the exact next-token law as M grows,
    so the loss reaches its minimum, and every concept's differences are parallel.
    """
    m, d, big = 5, 9, 30.0
    lcm = LatentConceptModel(m, edge_prob=0, seed=4)
    data = build_tokens(lcm)
    theta = torch.tensor([float(t[0]) for t in lcm.theta], dtype=torch.float64)
    x = data.contexts.double()
    f = torch.where(x < 0, (theta / (1 - theta)).log(), (2 * x - 1) * big)  # (context, m)
    g = data.tokens.double()  # (vocab, m)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)).double())
    rot = q[:m]  # (m, d) orthonormal rows: embed in R^d, rotated
    f_d, g_d = f @ rot, g @ rot + torch.randn(d).double()  # a common shift changes nothing
    assert expected_loss(f_d, g_d, data) == pytest.approx(data.entropy(), abs=1e-9)
    assert torch.allclose(linearity(g_d, concept_pairs(data.tokens)), torch.ones(m).double())
    assert torch.allclose(linearity(f_d, concept_pairs(data.contexts)), torch.ones(m).double())
    gram = concept_gram(g_d, concept_pairs(data.tokens))
    assert torch.allclose(gram, torch.eye(m).double(), atol=1e-12)  # orthogonal concepts
    # and a perturbed optimum is measurably worse on both counts
    noisy = g_d + 0.3 * torch.randn(g_d.shape, generator=torch.Generator().manual_seed(1)).double()
    assert linearity(noisy, concept_pairs(data.tokens)).max() < 0.95
    assert expected_loss(f_d, noisy, data) > data.entropy() + 1e-3


def test_random_abs_cosine_matches_simulation() -> None:
    from mechlin.origins.training import random_abs_cosine

    gen = torch.Generator().manual_seed(0)
    for d in (2, 3, 16):
        u = torch.nn.functional.normalize(torch.randn(20000, 2, d, generator=gen), dim=-1)
        sim = (u[:, 0] * u[:, 1]).sum(-1).abs().mean().item()
        assert random_abs_cosine(d) == pytest.approx(sim, abs=0.01)
    assert random_abs_cosine(2) == pytest.approx(2 / math.pi)
