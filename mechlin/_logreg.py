"""Small exact solvers for the probes: L2 logistic regression (batched Newton), L1 (FISTA).

Both minimise scikit-learn's objectives, so a probe here is the probe of the paper's code
(``LogisticRegression(C=C, class_weight="balanced")``), checked against scikit-learn in the
tests:

- L2: ``0.5 ||w||^2 + C sum_i s_i log(1 + exp(-y_i (w.x_i + b)))``, intercept unpenalised,
- L1: ``||w||_1 + C sum_i s_i log(1 + exp(-y_i (w.x_i + b)))``,

with balanced sample weights ``s_i = n / (2 n_class(i))``. Newton's method on the L2 problem
converges in a handful of steps for the widths probes use (k <= 256), and a batch of problems
(one per candidate support) is solved at once.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor


def balanced_weights(y: Bool[Tensor, " n"]) -> Float[Tensor, " n"]:
    n = y.numel()
    n_pos = int(y.sum())
    w_pos = n / (2 * n_pos)
    w_neg = n / (2 * (n - n_pos))
    return torch.where(y, w_pos, w_neg).to(torch.float64)


def _loss(X: Tensor, t: Tensor, sw: Tensor, w: Tensor, b: Tensor, C: float) -> Float[Tensor, " S"]:
    z = torch.einsum("snk,sk->sn", X, w) + b[:, None]  # (S, n)
    # log(1 + exp(-t z)) with t in {-1, +1}
    return 0.5 * (w * w).sum(-1) + C * (sw * torch.nn.functional.softplus(-t * z)).sum(-1)


def fit_l2(
    X: Float[Tensor, "S n k"],
    y: Bool[Tensor, " n"],
    *,
    C: float = 1.0,
    balanced: bool = True,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[Float[Tensor, "S k"], Float[Tensor, " S"]]:
    """L2 logistic regression for S problems sharing labels; float64 Newton steps.

    ``balanced=False`` weighs every example 1 (scikit-learn's ``class_weight=None``).
    """
    X = X.to(torch.float64)
    S, n, k = X.shape
    t = y.to(torch.float64) * 2 - 1  # (n,)
    sw = balanced_weights(y) if balanced else torch.ones(n, dtype=torch.float64)
    Xb = torch.cat([X, torch.ones(S, n, 1, dtype=torch.float64)], dim=-1)  # (S, n, k+1)
    theta = torch.zeros(S, k + 1, dtype=torch.float64)
    reg = torch.ones(k + 1, dtype=torch.float64)
    reg[-1] = 0.0  # the intercept is not penalised
    value = _loss(X, t, sw, theta[:, :k], theta[:, k], C)
    for _ in range(max_iter):
        z = torch.einsum("snk,sk->sn", Xb, theta)  # (S, n)
        p = torch.sigmoid(z)
        target = (t + 1) / 2
        grad = reg * theta + C * torch.einsum("sn,snk->sk", sw * (p - target), Xb)  # (S, k+1)
        curv = C * sw * p * (1 - p)  # (S, n)
        H = torch.einsum("snk,sn,snj->skj", Xb, curv, Xb) + torch.diag_embed(
            reg.expand(S, -1) + 1e-12
        )  # (S, k+1, k+1)
        step = torch.linalg.solve(H, grad[..., None])[..., 0]  # (S, k+1)
        decrement = (grad * step).sum(-1)  # (S,)
        if bool((decrement <= tol * (1 + value.abs())).all()):
            break
        # backtracking line search, per problem
        lr = torch.ones(S, dtype=torch.float64)
        for _ls in range(30):
            cand = theta - lr[:, None] * step
            cand_value = _loss(X, t, sw, cand[:, :k], cand[:, k], C)
            ok = cand_value <= value - 1e-4 * lr * decrement
            if bool(ok.all()):
                break
            lr = torch.where(ok, lr, lr / 2)
        theta, value = cand, torch.minimum(cand_value, value)
    return theta[:, :k], theta[:, k]


def fit_l1(
    X: Float[Tensor, "n k"],
    y: Bool[Tensor, " n"],
    *,
    C: float = 0.1,
    max_iter: int = 2000,
    tol: float = 1e-7,
) -> tuple[Float[Tensor, " k"], float]:
    """Balanced L1 logistic regression by FISTA (proximal gradient with momentum)."""
    X = X.to(torch.float64)
    n, k = X.shape
    target = y.to(torch.float64)
    sw = balanced_weights(y)
    # Lipschitz bound of the smooth part's gradient: C * max_eig(X^T S X) / 4 (+ intercept)
    Xb = torch.cat([X, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    lipschitz = C * float(torch.linalg.matrix_norm(Xb * sw.sqrt()[:, None], ord=2)) ** 2 / 4
    step = 1.0 / max(lipschitz, 1e-12)
    theta = torch.zeros(k + 1, dtype=torch.float64)
    mom = theta.clone()
    t_k = 1.0
    for _ in range(max_iter):
        p = torch.sigmoid(Xb @ mom)
        grad = C * (Xb.T @ (sw * (p - target)))
        nxt = mom - step * grad
        nxt[:k] = torch.sign(nxt[:k]) * (nxt[:k].abs() - step).clamp(min=0)  # soft threshold
        t_next = (1 + (1 + 4 * t_k * t_k) ** 0.5) / 2
        mom = nxt + ((t_k - 1) / t_next) * (nxt - theta)
        change = float((nxt - theta).abs().max())
        theta, t_k = nxt, t_next
        if change < tol:
            break
    return theta[:k], float(theta[k])
