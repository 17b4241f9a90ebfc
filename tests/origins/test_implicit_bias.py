"""Gradient descent with fixed context embeddings goes to the hard-margin direction."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import minimize

from mechlin import viz
from mechlin.errors import ArgumentError, OutOfRangeError
from mechlin.origins import LatentConceptModel, build_tokens
from mechlin.origins.implicit_bias import (
    FixedEmbeddingCheck,
    fixed_embedding_check,
    max_margin_unembeddings,
)


def test_closed_form_is_the_hard_margin_solution() -> None:
    # The least-norm logits with a margin of 1 between every support token and every other,
    # solved numerically (SLSQP) for one small model, against the closed form.
    lcm = LatentConceptModel(2, edge_prob=1.0, seed=0)
    data = build_tokens(lcm)
    n_ctx, n_tok = data.target.shape
    F = torch.eye(n_ctx, dtype=torch.float64)
    closed = max_margin_unembeddings(F, data).T  # (context, vocab) logits since F = I
    support = data.target > 0
    rows = []
    for x in range(n_ctx):
        for y in support[x].nonzero().flatten().tolist():
            for z in (~support[x]).nonzero().flatten().tolist():
                a = torch.zeros(n_ctx, n_tok, dtype=torch.float64)
                a[x, y], a[x, z] = 1.0, -1.0
                rows.append(a.flatten())
    A = torch.stack(rows).numpy()
    res = minimize(
        lambda v: float(v @ v), torch.zeros(n_ctx * n_tok, dtype=torch.float64).numpy(),
        jac=lambda v: 2 * v,
        constraints=[{"type": "ineq", "fun": lambda v: A @ v - 1, "jac": lambda v: A}],
        method="SLSQP", options={"ftol": 1e-12, "maxiter": 500},
    )  # fmt: skip
    assert res.success
    numeric = torch.from_numpy(res.x).reshape(n_ctx, n_tok)
    torch.testing.assert_close(closed, numeric, rtol=0, atol=1e-5)  # SLSQP's tolerance
    margins = torch.from_numpy(A) @ closed.flatten()
    assert float(margins.min()) == pytest.approx(1.0)


def test_the_closed_form_needs_orthonormal_embeddings() -> None:
    data = build_tokens(LatentConceptModel(2, seed=0))
    with pytest.raises(ArgumentError, match="orthonormal"):
        max_margin_unembeddings(2 * torch.eye(len(data.contexts)), data)


def test_gradient_descent_goes_to_the_max_margin_direction(tmp_path) -> None:
    r = fixed_embedding_check(LatentConceptModel(3, edge_prob=0.5, seed=0), steps=2**14)
    assert isinstance(r, FixedEmbeddingCheck)
    assert math.isnan(float(r.increment_cosine[0]))
    assert float(r.increment_cosine[-1]) > 0.995
    assert abs(float(r.increment_ratio[-1]) - math.log(2)) < 0.1
    # the direction converges, slowly (1 / log t): monotone over the last records
    tail = r.direction_cosine[-5:]
    assert bool((tail[1:] > tail[:-1]).all()) and float(tail[-1]) > 0.95
    assert "log 2" in r.summary()
    back = FixedEmbeddingCheck.load(r.save(tmp_path / "c.pt"))
    assert torch.equal(back.direction_cosine, r.direction_cosine)
    viz.close(r.plot())


def test_bad_checks() -> None:
    with pytest.raises(OutOfRangeError):
        fixed_embedding_check(LatentConceptModel(7, seed=0))
    with pytest.raises(OutOfRangeError):
        fixed_embedding_check(LatentConceptModel(3, seed=0), steps=1)
