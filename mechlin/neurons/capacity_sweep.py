"""Sweeps of the toy model: the superposition phase diagram and capacity allocation.

``phase_diagram`` reproduces Elhage et al. (2022) Fig. "phase change": for ``n = 2`` features in
``d = 1`` dimension (or any small ``n, d``), the last feature's importance relative to the others
(all 1) against the feature density ``1 - S``. Each cell trains ``n_seeds`` models as one batch
and keeps the lowest loss, then labels the last feature: *not represented* (``||W_n|| < 0.5``),
*dedicated* (represented, superposition < 0.5: a dimension of its own, the other feature
dropped when ``d = 1``) or *superposition* (sharing: an antipodal pair when ``n = 2, d = 1``).
The paper's finding: dense features never share; as sparsity rises a sharp boundary appears
past which the less important feature is kept in superposition.

``capacity_allocation`` reproduces Scherlis et al.'s (2022) point in Elhage's toy: with
importance decaying (``I_i = r^i``), the capacity ``C_i`` of features sorted by importance at
several sparsities - the most important get capacity 1, the least 0, those between a fraction,
and more features share as sparsity rises. ``superposition_sweep`` runs both.

Labels are thresholds on the measures (0.5 of norm and superposition, capacity > 0.9 "dedicated"
and < 0.1 "ignored"): mechlin's choices, stated with every result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechlin import viz
from mechlin._checks import checked
from mechlin.errors import ArgumentError
from mechlin.neurons.superposition import Hidden, _colormap, feature_measures, toy_superposition
from mechlin.results import Result

PHASES = ("not represented", "dedicated", "superposition")
MIN_NORM = 0.5
MIN_SUPERPOSITION = 0.5
DEDICATED_C = 0.9
IGNORED_C = 0.1


def _check_grid(name: str, values: Sequence[float | int], low: float, high: float) -> Tensor:
    t = torch.as_tensor(list(values), dtype=torch.float64)
    if t.ndim != 1 or t.numel() == 0:
        raise ArgumentError(f"{name} must be a non-empty sequence of numbers")
    if not bool(((t >= low) & (t < high)).all()):
        raise ArgumentError(f"{name} must lie in [{low}, {high}), got {t.tolist()}")
    return t


def _best_seed(loss: Tensor, n_cells: int, n_seeds: int) -> Tensor:
    """Index (into instances ordered cell-major, seed-minor) of each cell's lowest loss."""
    return torch.argmin(loss.view(n_cells, n_seeds), 1) + torch.arange(n_cells) * n_seeds


# ---------------------------------------------------------------- phase diagram


@dataclass(frozen=True)
class PhaseDiagram(Result):
    """Which phase the last feature is in, over relative importance x sparsity.

    ``phase[r, s]`` indexes ``PHASES``; ``norm``/``superposition`` are the last feature's
    measures in the best-of-seeds model of each cell; ``W`` those models' weights.
    """

    sparsity: Float[Tensor, " s"]
    relative_importance: Float[Tensor, " r"]
    phase: Int[Tensor, "r s"]
    norm: Float[Tensor, "r s"]
    superposition: Float[Tensor, "r s"]
    loss: Float[Tensor, "r s"]
    W: Float[Tensor, "r s feature hidden"]
    n_features: int
    d_hidden: int
    hidden: str
    steps: int
    n_seeds: int

    def __post_init__(self) -> None:
        shape = (self.relative_importance.numel(), self.sparsity.numel())
        for f in ("phase", "norm", "superposition", "loss"):
            if tuple(getattr(self, f).shape) != shape:
                raise ArgumentError(f"{f} must be [relative_importance, sparsity] = {shape}")

    def counts(self) -> dict[str, int]:
        return {p: int((self.phase == i).sum()) for i, p in enumerate(PHASES)}

    def onset(self, relative_importance: float = 1.0) -> float:
        """Lowest swept sparsity at which the last feature is in superposition, for the row of
        ``relative_importance`` nearest the one given (NaN if it never is)."""
        r = int(
            torch.argmin((self.relative_importance.log() - math.log(relative_importance)).abs())
        )
        hits = torch.nonzero(self.phase[r] == PHASES.index("superposition")).flatten()
        return float(self.sparsity[hits].min()) if hits.numel() else math.nan

    def summary(self) -> str:
        c = self.counts()
        lines = [
            f"PhaseDiagram: n={self.n_features} features, d={self.d_hidden} ({self.hidden}), "
            f"{self.relative_importance.numel()} importances x {self.sparsity.numel()} "
            f"sparsities, best of {self.n_seeds} seeds, {self.steps} steps",
            "  cells: " + ", ".join(f"{k} {v}" for k, v in c.items()),
        ]
        if self.d_hidden >= self.n_features:
            lines.append("  d_hidden >= n_features: no superposition is needed")
        dense = self.phase[:, 0]
        lines.append(
            f"  at the densest setting (S={float(self.sparsity[0]):.3g}) superposition in "
            f"{int((dense == 2).sum())}/{dense.numel()} importance rows"
        )
        onset = self.onset(1.0)
        lines.append(
            "  equal importance: superposition from S = "
            + (f"{onset:.3g}" if not math.isnan(onset) else "never (in the grid)")
        )
        return "\n".join(lines)

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(
            [
                dict(
                    relative_importance=float(imp),
                    sparsity=float(s),
                    density=1 - float(s),
                    phase=PHASES[int(self.phase[r, c])],
                    norm=float(self.norm[r, c]),
                    superposition=float(self.superposition[r, c]),
                    loss=float(self.loss[r, c]),
                )
                for r, imp in enumerate(self.relative_importance)
                for c, s in enumerate(self.sparsity)
            ]
        )

    def plot(self, ax: Any = None) -> Any:
        """Elhage et al.'s phase diagram: density (log) x relative importance (log)."""
        from matplotlib.colors import ListedColormap  # noqa: PLC0415
        from matplotlib.patches import Rectangle  # noqa: PLC0415

        fig, ax = viz.axes(ax, figsize=(5.5, 4.2))
        density = (1 - self.sparsity).numpy()
        imp = self.relative_importance.numpy()
        cmap = ListedColormap(["#d62728", "#1f77b4", "#9467bd"])
        ax.pcolormesh(
            _edges(density), _edges(imp), self.phase.numpy(), cmap=cmap, vmin=-0.5, vmax=2.5
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("feature density 1 - S  (sparser to the right)")
        ax.set_ylabel("relative importance of the last feature")
        ax.set_title(f"phase of the last feature, n={self.n_features}, d={self.d_hidden}")
        handles = [Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(3)]
        ax.legend(handles, PHASES, fontsize=7, loc="lower left")
        return fig


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges (geometric midpoints) of log-spaced centres, for pcolormesh."""
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        return np.array([c[0] / 1.5, c[0] * 1.5])
    mid = np.sqrt(c[:-1] * c[1:])
    return np.concatenate([[c[0] ** 2 / mid[0]], mid, [c[-1] ** 2 / mid[-1]]])


@checked
def phase_diagram(
    *,
    n_features: int = 2,
    d_hidden: int = 1,
    sparsities: Sequence[float | int] | None = None,
    relative_importances: Sequence[float | int] | None = None,
    grid: int = 10,
    hidden: Hidden = "linear",
    n_seeds: int = 2,
    steps: int = 5_000,
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> PhaseDiagram:
    """Train the toy over relative importance x sparsity and label the last feature's phase.

    Default grid: densities ``1 - S`` log-spaced from 1 to 0.01 and relative importances from
    0.1 to 10, ``grid`` values each; all ``grid^2 * n_seeds`` models train as one batch.
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ArgumentError(f"grid must be an integer >= 1, got {grid!r}")
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ArgumentError(f"n_seeds must be an integer >= 1, got {n_seeds!r}")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 2:
        raise ArgumentError(
            f"n_features must be an integer >= 2 for a phase diagram, got {n_features!r}"
        )
    s = (
        1 - torch.logspace(0, -2, grid, dtype=torch.float64)
        if sparsities is None
        else _check_grid("sparsities", sparsities, 0.0, 1.0)
    )
    r = (
        torch.logspace(-1, 1, grid, dtype=torch.float64)
        if relative_importances is None
        else _check_grid("relative_importances", relative_importances, 1e-12, math.inf)
    )
    # instances: cell-major (importance, sparsity), seed-minor
    imp = torch.ones(r.numel(), s.numel(), n_seeds, n_features, dtype=torch.float64)
    imp[..., -1] = r[:, None, None]
    sp = s[None, :, None].expand(r.numel(), s.numel(), n_seeds)
    toy = toy_superposition(
        n_features,
        d_hidden,
        sparsity=sp.flatten(),
        importance=imp.reshape(-1, n_features),
        hidden=hidden,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        progress=progress,
    )
    best = _best_seed(toy.loss, r.numel() * s.numel(), n_seeds)
    m = feature_measures(toy.W[best])
    norm, sup = m["norm"][:, -1], m["superposition"][:, -1]
    phase = torch.where(norm < MIN_NORM, 0, torch.where(sup < MIN_SUPERPOSITION, 1, 2))  # (cell,)
    shape = (r.numel(), s.numel())
    return PhaseDiagram(
        sparsity=s,
        relative_importance=r,
        phase=phase.view(shape),
        norm=norm.view(shape),
        superposition=sup.view(shape),
        loss=toy.loss[best].view(shape),
        W=toy.W[best].view(*shape, n_features, d_hidden),
        n_features=n_features,
        d_hidden=d_hidden,
        hidden=hidden,
        steps=steps,
        n_seeds=n_seeds,
    )


# ---------------------------------------------------------------- capacity allocation


@dataclass(frozen=True)
class CapacityAllocation(Result):
    """Capacity ``C_i`` of features (most important first) at several sparsities.

    ``capacity[s, i]`` is from the lowest-loss seed at sparsity ``s``; ``sum_i C_i <= d``.
    """

    sparsity: Float[Tensor, " s"]
    importance: Float[Tensor, " feature"]
    capacity: Float[Tensor, "s feature"]
    norm: Float[Tensor, "s feature"]
    superposition: Float[Tensor, "s feature"]
    loss: Float[Tensor, " s"]
    d_hidden: int
    hidden: str
    steps: int
    n_seeds: int

    def __post_init__(self) -> None:
        shape = (self.sparsity.numel(), self.importance.numel())
        for f in ("capacity", "norm", "superposition"):
            if tuple(getattr(self, f).shape) != shape:
                raise ArgumentError(f"{f} must be [sparsity, feature] = {shape}")

    @property
    def total(self) -> Float[Tensor, " s"]:
        return self.capacity.sum(-1)

    def counts(self) -> dict[str, Int[Tensor, " s"]]:
        """Per sparsity: features dedicated (C > 0.9), fractional, ignored (C < 0.1)."""
        c = self.capacity
        return dict(
            dedicated=(c > DEDICATED_C).sum(-1),
            fractional=((c >= IGNORED_C) & (c <= DEDICATED_C)).sum(-1),
            ignored=(c < IGNORED_C).sum(-1),
        )

    def order_violations(self, tol: float = 0.05) -> Int[Tensor, " s"]:
        """Pairs (i more important than j) where ``C_j > C_i + tol``: 0 if capacity follows
        importance."""
        c = self.capacity
        order = torch.argsort(self.importance, descending=True, stable=True)
        c = c[:, order]
        diff = c[:, None, :] - c[:, :, None]  # (s, i, j): C_j - C_i
        upper = torch.triu(torch.ones(c.shape[1], c.shape[1], dtype=torch.bool), 1)
        return ((diff > tol) & upper).sum((1, 2))

    def summary(self) -> str:
        n = self.importance.numel()
        lines = [
            f"CapacityAllocation: n={n} features, d={self.d_hidden} ({self.hidden}), "
            f"best of {self.n_seeds} seeds, {self.steps} steps; dedicated C > {DEDICATED_C}, "
            f"ignored C < {IGNORED_C}"
        ]
        if self.d_hidden >= n:
            lines.append("  d_hidden >= n_features: no superposition is needed")
        cnt = self.counts()
        viol = self.order_violations()
        for k, s in enumerate(self.sparsity.tolist()):
            lines.append(
                f"  S={s:.3g}: {int(cnt['dedicated'][k])} dedicated, "
                f"{int(cnt['fractional'][k])} fractional, {int(cnt['ignored'][k])} ignored; "
                f"sum C = {float(self.total[k]):.3f} <= {self.d_hidden}; "
                f"out-of-importance-order pairs {int(viol[k])}"
            )
        return "\n".join(lines)

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(
            [
                dict(
                    sparsity=float(s),
                    feature=i,
                    importance=float(self.importance[i]),
                    capacity=float(self.capacity[k, i]),
                    norm=float(self.norm[k, i]),
                    superposition=float(self.superposition[k, i]),
                )
                for k, s in enumerate(self.sparsity)
                for i in range(self.importance.numel())
            ]
        )

    def plot(self, ax: Any = None) -> Any:
        """Capacity of each feature (most important left), one line per sparsity."""
        fig, ax = viz.axes(ax, figsize=(6, 4))
        order = torch.argsort(self.importance, descending=True, stable=True)
        cmap = _colormap("plasma")
        n_s = self.sparsity.numel()
        for k, s in enumerate(self.sparsity.tolist()):
            ax.plot(
                range(order.numel()),
                self.capacity[k, order].numpy(),
                marker="o",
                ms=3,
                color=cmap(k / max(n_s - 1, 1) * 0.85),
                label=f"S={s:.3g} (sum {float(self.total[k]):.2f})",
            )
        ax.axhline(1, color="0.7", lw=0.8)
        ax.set_ylim(-0.03, 1.05)
        ax.set_xlabel("feature, most important first")
        ax.set_ylabel("capacity C_i")
        ax.set_title(f"capacity allocation, n={order.numel()}, d={self.d_hidden}")
        ax.legend(fontsize=7)
        return fig


@checked
def capacity_allocation(
    *,
    n_features: int = 20,
    d_hidden: int = 5,
    sparsities: Sequence[float | int] = (0.0, 0.7, 0.9, 0.97, 0.99, 0.997),
    importance: float | int | Sequence[float | int] | Tensor = 0.7,
    hidden: Hidden = "linear",
    n_seeds: int = 2,
    steps: int = 5_000,
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> CapacityAllocation:
    """Train the toy at each sparsity (``n_seeds`` seeds, one batch) and measure capacities."""
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ArgumentError(f"n_seeds must be an integer >= 1, got {n_seeds!r}")
    s = _check_grid("sparsities", sparsities, 0.0, 1.0)
    imp = torch.as_tensor(importance, dtype=torch.float64)
    if imp.ndim > 1:
        raise ArgumentError(
            f"importance must be a decay rate or a vector of {n_features} values, got shape "
            f"{tuple(imp.shape)}"
        )
    toy = toy_superposition(
        n_features,
        d_hidden,
        sparsity=s.repeat_interleave(n_seeds),
        importance=importance,
        hidden=hidden,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        progress=progress,
    )
    best = _best_seed(toy.loss, s.numel(), n_seeds)
    m = feature_measures(toy.W[best])
    return CapacityAllocation(
        sparsity=s,
        importance=toy.importance[0],
        capacity=m["capacity"],
        norm=m["norm"],
        superposition=m["superposition"],
        loss=toy.loss[best],
        d_hidden=d_hidden,
        hidden=hidden,
        steps=steps,
        n_seeds=n_seeds,
    )


# ---------------------------------------------------------------- both


@dataclass(frozen=True)
class SuperpositionSweep(Result):
    """The phase diagram and the capacity allocation, side by side."""

    phase: PhaseDiagram
    capacity: CapacityAllocation

    def summary(self) -> str:
        return self.phase.summary() + "\n" + self.capacity.summary()

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        a, b = self.phase.to_frame(), self.capacity.to_frame()
        a.insert(0, "part", "phase")
        b.insert(0, "part", "capacity")
        return pd.concat([a, b], ignore_index=True)

    def plot(self, fig: Any = None) -> Any:
        fig, axes = viz.figure(1, 2, fig=fig, figsize=(12, 4.4))
        self.phase.plot(ax=axes[0, 0])
        self.capacity.plot(ax=axes[0, 1])
        return fig


@checked
def superposition_sweep(
    *,
    grid: int = 10,
    phase_features: tuple[int, int] = (2, 1),
    capacity_features: tuple[int, int] = (20, 5),
    sparsities: Sequence[float | int] = (0.0, 0.7, 0.9, 0.97, 0.99, 0.997),
    importance: float | int = 0.7,
    hidden: Hidden = "linear",
    n_seeds: int = 2,
    steps: int = 5_000,
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> SuperpositionSweep:
    """Elhage et al.'s phase diagram (``phase_features = (n, d)``) and Scherlis et al.'s capacity
    allocation (``capacity_features``, importance decay ``importance``) in one call."""
    phase = phase_diagram(
        n_features=phase_features[0],
        d_hidden=phase_features[1],
        grid=grid,
        hidden=hidden,
        n_seeds=n_seeds,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        progress=progress,
    )
    capacity = capacity_allocation(
        n_features=capacity_features[0],
        d_hidden=capacity_features[1],
        sparsities=sparsities,
        importance=importance,
        hidden=hidden,
        n_seeds=n_seeds,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        progress=progress,
    )
    return SuperpositionSweep(phase=phase, capacity=capacity)
