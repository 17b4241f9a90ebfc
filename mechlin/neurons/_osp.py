"""Optimal sparse probing without Gurobi: exact search for k <= 2, a MIP (HiGHS) for k <= 8.

Gurnee et al.'s optimal sparse probe picks, among the top ``n_candidates`` neurons by mean
difference, the support of size k that minimises a hinge loss under an L0 constraint:

    min  sum_i s_i xi_i + eps ||w||_1
    s.t. y_i (w . x_i + b) >= 1 - xi_i,  xi_i >= 0,
         -M z_j <= w_j <= M z_j,  sum_j z_j <= k,  z_j in {0, 1}

(``s_i``: balanced class weights; features standardised on the training set so one big-M ``M``
fits every neuron; the tiny ``eps`` L1 term breaks ties between equal-loss supports). The paper
solves it with Gurobi; here ``scipy.optimize.milp`` (HiGHS) does, for 3 <= k <= 8, with a time
limit (the status says whether optimality was proven). For k <= 2 every support of the candidates
is tried: each is scored by its fitted balanced L2 logistic loss (the probe's own objective; all
supports are fitted in one batch), so there the search is exact for the probe that is reported.
The support found is refitted with the L2 logistic probe like every other method.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechlin._logreg import _loss, balanced_weights, fit_l2
from mechlin.errors import OptimizationError


@dataclass(frozen=True)
class OSPSolution:
    support: Int[Tensor, " k"]  # indices into the candidate columns
    status: str  # "exhaustive", "optimal", or "time limit (gap ...)"


def exhaustive_support(
    X: Float[Tensor, "n c"], y: Bool[Tensor, " n"], k: int, *, C: float = 1.0
) -> OSPSolution:
    """The size-k support (k <= 2) whose fitted balanced L2 logistic loss is smallest."""
    n_cand = X.shape[1]
    combos = torch.tensor(list(itertools.combinations(range(n_cand), k)), dtype=torch.long)
    best_loss = None
    best = None
    for start in range(0, combos.shape[0], 512):
        batch = combos[start : start + 512]  # (S, k)
        Xs = X.T[batch].transpose(1, 2).to(torch.float64)  # (S, n, k)
        w, b = fit_l2(Xs, y, C=C)
        t = y.to(torch.float64) * 2 - 1
        loss = _loss(Xs, t, balanced_weights(y), w, b, C)  # (S,)
        i = int(torch.argmin(loss))
        if best_loss is None or float(loss[i]) < best_loss:
            best_loss, best = float(loss[i]), batch[i]
    assert best is not None
    return OSPSolution(support=best, status="exhaustive")


def mip_support(
    X: Float[Tensor, "n c"],
    y: Bool[Tensor, " n"],
    k: int,
    *,
    big_m: float = 10.0,
    time_limit: float = 60.0,
    eps: float = 1e-4,
) -> OSPSolution:
    """L0-constrained hinge-loss MIP on the candidate columns (standardised), by HiGHS."""
    from scipy.optimize import Bounds, LinearConstraint, milp  # noqa: PLC0415
    from scipy.sparse import csr_array, hstack, identity, vstack  # noqa: PLC0415

    X64 = X.to(torch.float64)
    Xn = ((X64 - X64.mean(0)) / X64.std(0).clamp(min=1e-12)).numpy()
    n, c = Xn.shape
    t = (y.to(torch.float64) * 2 - 1).numpy()
    s = balanced_weights(y).numpy()
    # variables: w+ (c), w- (c), b (1), xi (n), z (c); w = w+ - w-
    cost = np.concatenate([np.full(2 * c, eps), [0.0], s / n, np.zeros(c)])
    ty = t[:, None] * Xn  # (n, c)
    margin = hstack(
        [csr_array(ty), csr_array(-ty), csr_array(t[:, None]), identity(n), csr_array((n, c))]
    )  # t_i (w.x_i + b) + xi_i >= 1
    eye = identity(c)
    zeros_b = csr_array((c, 1))
    zeros_xi = csr_array((c, n))
    link_pos = hstack([eye, csr_array((c, c)), zeros_b, zeros_xi, -big_m * eye])  # w+ <= M z
    link_neg = hstack([csr_array((c, c)), eye, zeros_b, zeros_xi, -big_m * eye])  # w- <= M z
    budget = hstack([csr_array((1, 2 * c + 1 + n)), csr_array(np.ones((1, c)))])  # sum z <= k
    A = vstack([margin, link_pos, link_neg, budget]).tocsr()
    lower = np.concatenate([np.ones(n), np.full(2 * c, -np.inf), [-np.inf]])
    upper = np.concatenate([np.full(n, np.inf), np.zeros(2 * c), [k]])
    lb = np.concatenate([np.zeros(2 * c), [-np.inf], np.zeros(n), np.zeros(c)])
    ub = np.concatenate([np.full(2 * c, big_m), [np.inf], np.full(n, np.inf), np.ones(c)])
    integrality = np.concatenate([np.zeros(2 * c + 1 + n), np.ones(c)])
    res = milp(
        cost,
        constraints=LinearConstraint(A, lower, upper),
        bounds=Bounds(lb, ub),
        integrality=integrality,
        options={"time_limit": time_limit, "disp": False},
    )
    if res.x is None:
        raise OptimizationError(f"the optimal-sparse-probe MIP found no solution: {res.message}")
    w = res.x[:c] - res.x[c : 2 * c]
    z = res.x[2 * c + 1 + n :]
    # support: the selected indicators, most weight first (ties on |w|), exactly k columns
    score = z * 1e6 + np.abs(w)
    support = torch.tensor(np.argsort(-score, kind="stable")[:k].copy(), dtype=torch.long)
    status = "optimal" if res.status == 0 else f"time limit (gap {res.mip_gap:.2g})"
    return OSPSolution(support=support, status=status)
