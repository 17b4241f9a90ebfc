"""Toy models of superposition (Elhage et al. 2022) and feature capacity (Scherlis et al. 2022).

The toy: ``n`` features ``x_i``, each zero with probability ``S`` (the *sparsity*) and otherwise
uniform in [0, 1], are squeezed through ``d < n`` hidden dimensions and reconstructed:

- ``hidden="linear"``: ``h = W x``, ``x' = ReLU(W^T h + b)``. The hidden space has no privileged
  basis (any rotation of ``W`` is as good), so only feature *directions* mean anything.
- ``hidden="relu"``: ``h = ReLU(W x)``, same readout. The ReLU makes the ``d`` hidden units
  *neurons*: a neuron whose positive input weight comes from one feature is monosemantic, one fed
  by several features is polysemantic.

``W`` is ``d x n``; feature ``i``'s direction is its column ``W_i`` (stored here as row ``i`` of
``[feature, hidden]``). The loss is the importance-weighted squared error
``sum_i I_i (x_i - x'_i)^2`` averaged over the batch, minimised with AdamW (lr 1e-3, weight decay
0.01: torch's default, as in Elhage et al.'s notebook) on fresh batches of 1024.

Measures of a trained ``W`` (``feature_measures``):

- ``||W_i||``: ~1 when feature ``i`` is represented, ~0 when it is dropped;
- superposition ``sum_{j != i} (W_i_hat . W_j)^2``: how much of other features lies along
  feature ``i``'s direction (0 for a dedicated dimension; 1 for an antipodal pair);
- capacity (Scherlis) ``C_i = (W_i . W_i)^2 / sum_j (W_i . W_j)^2`` in [0, 1], with
  ``sum_i C_i <= d``: 1 for a dedicated dimension, 0 for an ignored feature, fractional for
  features sharing dimensions (1/2 for an antipodal pair, 2/5 for a pentagon);
- dimensionality (Elhage) ``D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2``. Written out,
  ``D_i = ||W_i||^4 / sum_j (W_i . W_j)^2 = C_i``: the two papers' quantities are one number
  (both are computed, and tested equal). A dropped feature (``W_i = 0``) gets 0.

What to expect (Elhage et al. Figs. 2-4): with dense features the model keeps the ``d`` most
important ones in orthogonal directions (capacity 1; the PCA solution) and drops the rest; as
sparsity rises it packs more features than dimensions (antipodal pairs, then triangles,
pentagons...), in a sharp phase change. Scherlis et al.: capacity goes to features in order of
importance - the most important get a whole dimension, the least none, those between a
fraction.

Several models train as one batched tensor op with a leading *instance* dimension (each instance
its own sparsity, importance and seed), as in Elhage et al.'s code; instance ``k`` is exactly the
model ``toy_superposition(..., seed=seed + k)`` trained alone (tested). Each instance draws its
initial weights and every batch from its own generator, so results never depend on how models
were batched.

Pitfalls: a trained toy can end in a local minimum (Elhage et al. train several seeds and keep
the lowest loss: ``n_instances`` with one setting gives several seeds); measures of a dropped
feature are 0, not NaN; ``d_hidden >= n_features`` is allowed but needs no superposition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechlin import viz
from mechlin._checks import checked
from mechlin.errors import ArgumentError, NotInResultError
from mechlin.results import Result

Hidden = Literal["linear", "relu"]
HIDDEN: tuple[str, ...] = get_args(Hidden)
CHUNK = 8  # batches drawn per generator call (fixed: the stream must not depend on batching)
EVAL_BATCHES = 8  # batches of fresh data the reported loss is averaged over
ZERO_NORM = 1e-8  # a feature direction shorter than this counts as absent (measures 0)


# ---------------------------------------------------------------- measures


@checked
def feature_measures(W: Float[Tensor, "*instance feature hidden"]) -> dict[str, Tensor]:
    """Per-feature norm, superposition, capacity and dimensionality of feature directions.

    ``W[..., i, :]`` is feature ``i``'s direction. Computed in float64; returns tensors of shape
    ``[*instance, feature]`` under the keys ``norm``, ``superposition``, ``capacity``,
    ``dimensionality``.

    >>> W = torch.tensor([[1.0], [-1.0]])               # an antipodal pair in one dimension
    >>> m = feature_measures(W)
    >>> m["capacity"].tolist(), m["superposition"].tolist()
    ([0.5, 0.5], [1.0, 1.0])
    """
    W = W.double()
    gram = W @ W.transpose(-1, -2)  # (..., feature, feature): W_i . W_j
    sq = gram.diagonal(dim1=-2, dim2=-1)  # (..., feature): ||W_i||^2
    norm = sq.sqrt()
    present = norm > ZERO_NORM
    safe_sq = torch.where(present, sq, torch.ones_like(sq))
    overlap = (gram**2).sum(-1)  # sum_j (W_i . W_j)^2, j = i included
    capacity = torch.where(present, sq**2 / overlap.clamp(min=1e-300), torch.zeros_like(sq))
    # sum_{j != i} (W_i_hat . W_j)^2 = (sum_j (W_i . W_j)^2 - ||W_i||^4) / ||W_i||^2
    superposition = torch.where(
        present, (overlap - sq**2).clamp(min=0) / safe_sq, torch.zeros_like(sq)
    )
    dimensionality = torch.where(
        present, sq / (overlap / safe_sq).clamp(min=1e-300), torch.zeros_like(sq)
    )
    return dict(
        norm=norm, superposition=superposition, capacity=capacity, dimensionality=dimensionality
    )


@checked
def neuron_shares(
    W: Float[Tensor, "*instance feature hidden"],
) -> Float[Tensor, "*instance hidden feature"]:
    """Share of each neuron's positive input energy from each feature (rows sum to 1 or 0).

    With non-negative features a neuron ``h_j = ReLU(sum_i W_ij x_i)`` responds only to features
    with a positive weight, so the share is ``ReLU(W_ij)^2 / sum_i ReLU(W_ij)^2``.
    """
    pos = W.double().clamp(min=0).transpose(-1, -2) ** 2  # (..., hidden, feature)
    total = pos.sum(-1, keepdim=True)
    return torch.where(total > 0, pos / total.clamp(min=1e-300), torch.zeros_like(pos))


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class ToyNeurons(Result):
    """The ReLU toy's neurons: which features each responds to, and its label.

    ``share[k, j, i]``: share of neuron ``j``'s positive input energy from feature ``i``
    (instance ``k``). A neuron responds to a feature whose share is at least ``threshold``;
    it is ``"dead"`` when its largest positive input weight is below ``dead_weight``,
    ``"monosemantic"`` with one such feature and ``"polysemantic"`` with more.
    """

    share: Float[Tensor, "instance hidden feature"]
    max_weight: Float[Tensor, "instance hidden"]  # largest positive input weight
    n_features: Int[Tensor, "instance hidden"]  # features above the threshold (polysemanticity)
    labels: tuple[tuple[str, ...], ...]  # [instance][neuron]
    threshold: float
    dead_weight: float

    def __post_init__(self) -> None:
        n_inst, n_hidden, _ = self.share.shape
        if tuple(self.n_features.shape) != (n_inst, n_hidden) or len(self.labels) != n_inst:
            raise ArgumentError("n_features and labels must be [instance, hidden]")

    def counts(self, instance: int = 0) -> dict[str, int]:
        """How many neurons of one instance are monosemantic, polysemantic, dead."""
        row = self.labels[instance]
        return {k: row.count(k) for k in ("monosemantic", "polysemantic", "dead")}

    def summary(self) -> str:
        lines = [f"ToyNeurons: share threshold {self.threshold}, dead below {self.dead_weight}"]
        for k, row in enumerate(self.labels[:6]):
            feats = [
                torch.nonzero(self.share[k, j] >= self.threshold).flatten().tolist()
                if row[j] != "dead"
                else []
                for j in range(len(row))
            ]
            c = self.counts(k)
            lines.append(
                f"  instance {k}: {c['monosemantic']} mono, {c['polysemantic']} poly, "
                f"{c['dead']} dead; features per neuron {feats}"
            )
        return "\n".join(lines)

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        rows = []
        for k, row in enumerate(self.labels):
            for j, label in enumerate(row):
                feats = torch.nonzero(self.share[k, j] >= self.threshold).flatten().tolist()
                rows.append(
                    dict(
                        instance=k,
                        neuron=j,
                        label=label,
                        n_features=int(self.n_features[k, j]),
                        features=tuple(feats) if label != "dead" else (),
                        max_weight=float(self.max_weight[k, j]),
                    )
                )
        return pd.DataFrame(rows)

    def plot(self, ax: Any = None) -> Any:
        """Instance 0: each neuron's input shares by feature, labelled."""
        share = self.share[0].numpy()
        fig, ax = viz.axes(ax, figsize=(0.35 * share.shape[1] + 3, 0.35 * share.shape[0] + 1.5))
        img = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_yticks(range(share.shape[0]))
        ax.set_yticklabels([f"n{j} {lab[:4]}" for j, lab in enumerate(self.labels[0])], fontsize=7)
        ax.set_xlabel("feature (importance order)")
        ax.set_title("ReLU toy: neuron input shares", fontsize=9)
        fig.colorbar(img, ax=ax, fraction=0.046)
        return fig


@dataclass(frozen=True)
class ToySuperposition(Result):
    """Trained toy models (one per instance): weights, settings, loss and measures.

    ``W[k, i]`` is feature ``i``'s direction in instance ``k`` (column ``i`` of the paper's
    ``d x n`` matrix). Features are in the order given (with a decay rate: most important first).
    """

    W: Float[Tensor, "instance feature hidden"]
    b: Float[Tensor, "instance feature"]
    importance: Float[Tensor, "instance feature"]
    sparsity: Float[Tensor, " instance"]
    loss: Float[Tensor, " instance"]  # final loss on fresh batches
    seeds: tuple[int, ...]
    hidden: str
    steps: int
    lr: float
    weight_decay: float
    batch_size: int

    def __post_init__(self) -> None:
        n_inst, n_feat, _ = self.W.shape
        if tuple(self.b.shape) != (n_inst, n_feat) or tuple(self.importance.shape) != (
            n_inst,
            n_feat,
        ):
            raise ArgumentError(f"b and importance must be [instance, feature] = {n_inst, n_feat}")
        if tuple(self.sparsity.shape) != (n_inst,) or tuple(self.loss.shape) != (n_inst,):
            raise ArgumentError(f"sparsity and loss must hold one value per instance ({n_inst})")
        if len(self.seeds) != n_inst:
            raise ArgumentError(f"one seed per instance ({n_inst}), got {len(self.seeds)}")

    # --- sizes and measures
    @property
    def n_instances(self) -> int:
        return int(self.W.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.W.shape[1])

    @property
    def d_hidden(self) -> int:
        return int(self.W.shape[2])

    def measures(self) -> dict[str, Tensor]:
        """``feature_measures`` of every instance: ``[instance, feature]`` tensors."""
        return feature_measures(self.W)

    @property
    def norms(self) -> Float[Tensor, "instance feature"]:
        return self.measures()["norm"]

    @property
    def interference(self) -> Float[Tensor, "instance feature"]:
        """Superposition ``sum_{j != i} (W_i_hat . W_j)^2``."""
        return self.measures()["superposition"]

    @property
    def capacity(self) -> Float[Tensor, "instance feature"]:
        return self.measures()["capacity"]

    @property
    def dimensionality(self) -> Float[Tensor, "instance feature"]:
        return self.measures()["dimensionality"]

    def n_represented(self, min_norm: float = 0.5) -> Int[Tensor, " instance"]:
        """Features with ``||W_i|| >= min_norm``, per instance."""
        return (self.norms >= min_norm).sum(-1)

    def best(self) -> ToySuperposition:
        """The instance of lowest loss (of instances that share one setting: the best seed)."""
        return self.instance(int(torch.argmin(self.loss)))

    def instance(self, k: int) -> ToySuperposition:
        """Instance ``k`` alone."""
        if not -self.n_instances <= k < self.n_instances:
            raise NotInResultError(f"instance {k} not in 0..{self.n_instances - 1}")
        k = k % self.n_instances
        sl = slice(k, k + 1)
        return ToySuperposition(
            W=self.W[sl],
            b=self.b[sl],
            importance=self.importance[sl],
            sparsity=self.sparsity[sl],
            loss=self.loss[sl],
            seeds=(self.seeds[k],),
            hidden=self.hidden,
            steps=self.steps,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
        )

    def neurons(self, *, threshold: float = 0.1, dead_weight: float = 0.05) -> ToyNeurons:
        """Per neuron of the ReLU model: the features it responds to and its label.

        ``threshold``: the share of a neuron's positive input energy a feature must carry to
        count (mechlin's default 0.1); ``dead_weight``: a neuron whose largest positive input
        weight is below it never fires noticeably.
        """
        if self.hidden != "relu":
            raise ArgumentError(
                f"hidden={self.hidden!r} has no privileged basis, so no neurons: train with "
                "hidden='relu' for monosemantic / polysemantic neurons"
            )
        if not 0 < threshold <= 1:
            raise ArgumentError(f"threshold must be in (0, 1], got {threshold}")
        if dead_weight < 0:
            raise ArgumentError(f"dead_weight must be >= 0, got {dead_weight}")
        share = neuron_shares(self.W)  # (inst, hidden, feature)
        max_weight = self.W.double().clamp(min=0).amax(1)  # (inst, hidden)
        dead = max_weight < dead_weight
        n_feat = torch.where(dead, 0, (share >= threshold).sum(-1))
        labels = tuple(
            tuple(
                "dead" if bool(dead[k, j]) else "monosemantic" if n == 1 else "polysemantic"
                for j, n in enumerate(n_feat[k].tolist())
            )
            for k in range(self.n_instances)
        )
        return ToyNeurons(
            share=share,
            max_weight=max_weight,
            n_features=n_feat,
            labels=labels,
            threshold=threshold,
            dead_weight=dead_weight,
        )

    # --- views
    def summary(self) -> str:
        m = self.measures()
        lines = [
            f"ToySuperposition: {self.n_instances} model(s), n={self.n_features} features, "
            f"d={self.d_hidden} ({self.hidden} hidden), {self.steps} steps"
        ]
        if self.d_hidden >= self.n_features:
            lines.append(
                "  d_hidden >= n_features: every feature fits a dimension of its own, "
                "no superposition is needed"
            )
        for k in range(min(self.n_instances, 8)):
            rep = int((m["norm"][k] >= 0.5).sum())
            cap = m["capacity"][k]
            lines.append(
                f"  [{k}] S={float(self.sparsity[k]):.3g} loss={float(self.loss[k]):.4g}: "
                f"{rep}/{self.n_features} features represented (||W_i|| >= 0.5), "
                f"{int((m['superposition'][k] > 0.1).sum())} in superposition; "
                f"sum C_i = {float(cap.sum()):.3f} <= d = {self.d_hidden}"
            )
        if self.n_instances > 8:
            lines.append(f"  ... {self.n_instances - 8} more")
        return "\n".join(lines)

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        m = self.measures()
        rows = [
            dict(
                instance=k,
                seed=self.seeds[k],
                sparsity=float(self.sparsity[k]),
                feature=i,
                importance=float(self.importance[k, i]),
                norm=float(m["norm"][k, i]),
                superposition=float(m["superposition"][k, i]),
                capacity=float(m["capacity"][k, i]),
                dimensionality=float(m["dimensionality"][k, i]),
                bias=float(self.b[k, i]),
                loss=float(self.loss[k]),
            )
            for k in range(self.n_instances)
            for i in range(self.n_features)
        ]
        return pd.DataFrame(rows)

    def plot(self, fig: Any = None) -> Any:
        """Elhage et al.'s view, per instance (up to 6): ``W^T W`` and ``||W_i||`` by feature,
        bars coloured by superposition (black: a dimension of its own; yellow: shared)."""
        shown = min(self.n_instances, 6)
        fig, axes = viz.figure(2, shown, fig=fig, figsize=(2.4 * shown + 1, 5))
        m = self.measures()
        cmap = _colormap("viridis")
        for k in range(shown):
            W = self.W[k].double()
            gram = (W @ W.T).numpy()
            axes[0, k].imshow(gram, cmap="RdBu", vmin=-1, vmax=1)
            axes[0, k].set_title(f"S={float(self.sparsity[k]):.3g}", fontsize=8)
            axes[0, k].set_xticks([])
            axes[0, k].set_yticks([])
            sup = m["superposition"][k].clamp(max=1).numpy()
            axes[1, k].barh(
                range(self.n_features), m["norm"][k].numpy(), color=cmap(sup), edgecolor="0.3"
            )
            axes[1, k].invert_yaxis()
            axes[1, k].set_xlim(0, max(1.2, float(m["norm"][k].max()) * 1.05))
            axes[1, k].set_xlabel("||W_i||", fontsize=8)
        axes[0, 0].set_ylabel("W^T W", fontsize=8)
        axes[1, 0].set_ylabel("feature", fontsize=8)
        fig.suptitle(f"toy model, n={self.n_features}, d={self.d_hidden}, {self.hidden}")
        return fig


# ---------------------------------------------------------------- training


def _check_positive_int(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _as_sparsity(sparsity: float | int | Sequence[float | int] | Tensor) -> Tensor:
    s = torch.as_tensor(sparsity, dtype=torch.float64).flatten()
    if s.numel() == 0:
        raise ArgumentError("sparsity is empty: pass a number in [0, 1) or one per instance")
    bad = ~((s >= 0) & (s < 1))
    if bool(bad.any()):
        raise ArgumentError(
            f"sparsity must lie in [0, 1) (the probability a feature is zero), got "
            f"{s[bad].tolist()}"
        )
    return s


def _as_importance(
    importance: float | int | Sequence[float | int] | Tensor, n_features: int
) -> Tensor:
    imp = torch.as_tensor(importance, dtype=torch.float64)
    if imp.ndim == 0:  # a decay rate: I_i = r^i
        r = float(imp)
        if not (math.isfinite(r) and r > 0):
            raise ArgumentError(f"importance decay rate must be finite and > 0, got {r}")
        return (r ** torch.arange(n_features, dtype=torch.float64))[None]
    if imp.ndim == 1:
        imp = imp[None]
    if imp.ndim != 2 or imp.shape[1] != n_features:
        raise ArgumentError(
            f"importance must be a decay rate, a vector of n_features={n_features} values or "
            f"[instance, {n_features}], got shape {tuple(imp.shape)}"
        )
    if not bool((torch.isfinite(imp) & (imp >= 0)).all()) or not bool((imp.sum(1) > 0).all()):
        raise ArgumentError("importance values must be finite, >= 0 and not all 0")
    return imp


def _broadcast(n: int, name: str, size: int) -> int:
    if size not in (1, n) and n != 1:
        raise ArgumentError(f"{name} has {size} instances but another argument has {n}")
    return max(n, size)


def _draw(
    gens: Sequence[torch.Generator], n_batches: int, batch: int, n_features: int, device: Any
) -> Tensor:
    """Uniform draws (n_batches, instance, batch, feature), each instance from its generator."""
    return torch.stack(
        [
            torch.rand(
                n_batches, batch, n_features, generator=g, device=device, dtype=torch.float32
            )
            for g in gens
        ],
        dim=1,
    )


def _features(u: Tensor, sparsity: Tensor) -> Tensor:
    """One uniform draw gives both parts: x = 0 if u < S, else (u - S) / (1 - S) ~ U[0, 1]."""
    s = sparsity[:, None, None]  # (instance, 1, 1)
    return torch.where(u < s, torch.zeros_like(u), (u - s) / (1 - s))


def _forward(x: Tensor, W: Tensor, b: Tensor, relu_hidden: bool) -> Tensor:
    """x (instance, batch, feature) -> reconstruction (instance, batch, feature)."""
    h = torch.bmm(x, W)  # (instance, batch, hidden)
    if relu_hidden:
        h = torch.relu(h)
    return torch.relu(torch.bmm(h, W.transpose(1, 2)) + b[:, None])


def _loss(x: Tensor, out: Tensor, importance: Tensor) -> Tensor:
    """Importance-weighted squared error, summed over features, mean over the batch."""
    return (importance[:, None] * (x - out) ** 2).sum(-1).mean(-1)  # (instance,)


@checked
def toy_superposition(
    n_features: int,
    d_hidden: int,
    *,
    sparsity: float | int | Sequence[float | int] | Tensor = 0.9,
    importance: float | int | Sequence[float | int] | Tensor = 1.0,
    hidden: Hidden = "linear",
    n_instances: int | None = None,
    steps: int = 10_000,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    batch_size: int = 1024,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> ToySuperposition:
    """Train Elhage et al.'s toy model(s) of superposition; one or many instances at once.

    ``sparsity``: probability a feature is 0, one number or one per instance. ``importance``: a
    decay rate ``r`` (``I_i = r^i``), a vector of ``n_features`` values, or ``[instance,
    n_features]``. ``n_instances`` repeats the settings (instance ``k`` uses seed ``seed + k``);
    by default it is the number of sparsities / importance rows given.

    >>> toy = toy_superposition(2, 1, sparsity=0.95, steps=3000, batch_size=256)
    >>> [round(v, 1) for v in toy.norms[0].tolist()], float(toy.W[0, 0] * toy.W[0, 1]) < 0
    ([1.0, 1.0], True)
    """
    _check_positive_int("n_features", n_features)
    _check_positive_int("d_hidden", d_hidden)
    _check_positive_int("steps", steps)
    _check_positive_int("batch_size", batch_size)
    if hidden not in HIDDEN:
        raise ArgumentError(f"hidden must be one of {HIDDEN}, not {hidden!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ArgumentError(f"lr must be finite and > 0, got {lr}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ArgumentError(f"weight_decay must be finite and >= 0, got {weight_decay}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentError(f"seed must be an integer, got {seed!r}")
    s = _as_sparsity(sparsity)
    imp = _as_importance(importance, n_features)
    n = _broadcast(s.numel(), "sparsity", imp.shape[0])
    if n_instances is not None:
        _check_positive_int("n_instances", n_instances)
        n = _broadcast(n, "n_instances", n_instances)
    s, imp = s.expand(n).clone(), imp.expand(n, n_features).clone()
    seeds = tuple(seed + k for k in range(n))
    W, b, loss = _train(
        s, imp, d_hidden, hidden == "relu", seeds, steps, lr, weight_decay, batch_size,
        torch.device(device), progress,
    )  # fmt: skip
    return ToySuperposition(
        W=W,
        b=b,
        importance=imp,
        sparsity=s,
        loss=loss,
        seeds=seeds,
        hidden=hidden,
        steps=steps,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
    )


def _train(
    sparsity: Tensor,
    importance: Tensor,
    d_hidden: int,
    relu_hidden: bool,
    seeds: tuple[int, ...],
    steps: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    n_features = importance.shape[1]
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    std = math.sqrt(2.0 / (n_features + d_hidden))  # Xavier normal, as Elhage et al.
    W = torch.stack(
        [torch.randn(n_features, d_hidden, generator=g, device=device) * std for g in gens]
    ).requires_grad_()  # (instance, feature, hidden)
    b = torch.zeros(len(seeds), n_features, device=device, requires_grad=True)
    s = sparsity.to(device, torch.float32)
    imp = importance.to(device, torch.float32)
    opt = torch.optim.AdamW([W, b], lr=lr, weight_decay=weight_decay)
    bar = tqdm(total=steps, desc="toy models", disable=not progress)
    done = 0
    while done < steps:
        n_batches = min(CHUNK, steps - done)
        xs = _features(_draw(gens, n_batches, batch_size, n_features, device), s)
        for x in xs:  # (instance, batch, feature)
            loss = _loss(x, _forward(x, W, b, relu_hidden), imp).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        done += n_batches
        bar.update(n_batches)
    bar.close()
    with torch.no_grad():
        xs = _features(_draw(gens, EVAL_BATCHES, batch_size, n_features, device), s)
        final = torch.stack([_loss(x, _forward(x, W, b, relu_hidden), imp) for x in xs]).mean(0)
    return W.detach().cpu(), b.detach().cpu(), final.double().cpu()


def _colormap(name: str) -> Any:
    import matplotlib  # noqa: PLC0415  (only when drawn)

    return matplotlib.colormaps[name]
