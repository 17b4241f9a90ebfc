"""The latent-concept model: sampler vs exact enumeration, independence, the training data."""

from __future__ import annotations

import pytest
import torch

from mechlin.errors import OutOfRangeError
from mechlin.origins import LatentConceptModel, build_tokens
from tests.reference.origins_ref import reference_joint


@pytest.fixture(scope="module")
def lcm() -> LatentConceptModel:
    return LatentConceptModel(5, edge_prob=0.6, seed=3)


def test_parameters_lie_in_range_and_the_dag_points_forward(lcm) -> None:
    assert lcm.edges, "this seed should give a DAG with edges"
    assert all(p < c for p, c in lcm.edges)
    for t in lcm.theta:
        assert ((t >= 0.3) & (t <= 0.7)).all()


def test_joint_equals_the_hand_multiplied_tables(lcm) -> None:
    ref = reference_joint(lcm)
    joint = lcm.joint()
    for k, c in enumerate(lcm.all_vectors().tolist()):
        assert joint[k].item() == pytest.approx(ref[tuple(c)], abs=1e-15)
    assert joint.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_sampler_matches_enumeration_within_sampling_error(lcm) -> None:
    n = 300_000
    c = lcm.sample(n, seed=1).double()  # (n, m)
    p = lcm.marginals()
    se = (p * (1 - p) / n).sqrt()
    assert ((c.mean(0) - p).abs() < 4.5 * se).all()
    # pairwise joints and a conditional, by enumeration
    vec = lcm.all_vectors().double()
    p11 = vec.T @ (vec * lcm.joint()[:, None])
    emp = c.T @ c / n
    assert ((emp - p11).abs() < 4.5 * (p11 * (1 - p11) / n).sqrt() + 1e-12).all()
    for i, j in [(0, 4), (2, 3), (1, 4)]:
        sel = c[:, i] == 1
        exact = lcm.conditional({i: 1}, query=j).item()
        se = (exact * (1 - exact) / sel.sum()).sqrt()
        assert abs(c[sel, j].mean().item() - exact) < 4.5 * se


def test_conditional_is_the_renormalized_joint(lcm) -> None:
    post = lcm.conditional({1: 0, 3: 1})
    vec, joint = lcm.all_vectors(), lcm.joint()
    keep = (vec[:, 1] == 0) & (vec[:, 3] == 1)
    assert torch.allclose(post[keep], joint[keep] / joint[keep].sum(), atol=1e-15)
    assert (post[~keep] == 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_dag_independence_equals_exact_independence(seed) -> None:
    lcm = LatentConceptModel(6, edge_prob=0.3, seed=seed)
    dag = lcm.independent_pairs(method="dag")
    assert torch.equal(dag, lcm.independent_pairs(method="exact", atol=1e-12))
    assert torch.equal(dag, dag.T) and not dag.diagonal().any()
    pairs = lcm.independent_pair_list()
    assert len(pairs) == dag.sum() // 2 and all(bool(dag[i, j]) and i < j for i, j in pairs)


def test_no_edges_means_all_pairs_independent_and_a_chain_none() -> None:
    free = LatentConceptModel(4, edge_prob=0, seed=0)
    assert free.independent_pairs().sum() == 4 * 3
    chain = LatentConceptModel(4, edge_prob=1, max_parents=1, seed=0)
    assert chain.independent_pairs().sum() == 0


def test_full_vocabulary_targets_are_the_exact_conditionals(lcm) -> None:
    data = build_tokens(lcm)
    assert len(data.tokens) == 32 and len(data.contexts) == 3**5
    assert torch.allclose(data.target.sum(1), torch.ones(len(data.contexts), dtype=torch.float64))
    assert data.weight.sum().item() == pytest.approx(1.0)
    order = data.tokens @ (2 ** torch.arange(5))  # token -> index in all_vectors
    for x in [0, 7, 100, 242]:
        core = {i: int(v) for i, v in enumerate(data.contexts[x].tolist()) if v >= 0}
        exact = lcm.conditional(core)[order]
        assert torch.allclose(data.target[x], exact, atol=1e-14)


def test_incomplete_context_and_concept_sets() -> None:
    lcm = LatentConceptModel(5, seed=0)
    data = build_tokens(lcm, context_fraction=0.25, token_fraction=0.5, seed=1)
    assert len(data.tokens) == 16
    assert data.train.sum() == round(0.25 * len(data.contexts))
    assert (data.target.sum(1) - 1).abs().max() < 1e-12  # every context has a token


def test_sampled_vocabulary_for_large_m_has_pairs_for_every_concept() -> None:
    from mechlin.origins import differing_pairs

    lcm = LatentConceptModel(40, seed=0)
    data = build_tokens(lcm, n_tokens=400, n_contexts=500)
    assert len(data.tokens) <= 400
    assert all(len(differing_pairs(data.tokens, i)) >= 1 for i in range(40))


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(OutOfRangeError, match="n_concepts"):
        LatentConceptModel(0)
    with pytest.raises(OutOfRangeError, match="edge_prob"):
        LatentConceptModel(3, edge_prob=1.5)
    big = LatentConceptModel(17, seed=0)
    with pytest.raises(OutOfRangeError, match="<= 16"):
        big.joint()
    with pytest.raises(OutOfRangeError, match="n_contexts"):
        build_tokens(LatentConceptModel(10, seed=0), n_tokens=50)
    with pytest.raises(OutOfRangeError, match="context_fraction"):
        build_tokens(LatentConceptModel(3, seed=0), context_fraction=0)
