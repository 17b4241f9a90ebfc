"""Many latent-concept models trained at once, to convergence: ``origins_grid``.

``train_origins`` follows one model with sampled mini-batches. To ask how linearity and
orthogonality behave *at convergence* across seeds, dimensions ``d`` and numbers of concepts
``m`` (Jiang et al.'s claim that linear representations survive ``d << m``), this module trains
a grid of instances as one batched operation by full-batch gradient descent on the *exact*
expected loss of each instance,

    L(F, G) = sum_x w(x) sum_y Q(y | x) (-log softmax_y(F G^T)[x, y]),

with ``F`` one free embedding per training context and ``G`` one unembedding per token (the
paper's ``f`` and ``g``). Gradient descent, not Adam: the implicit bias the paper invokes is
gradient descent's. The exact loss has a closed-form minimum, the expected conditional entropy
(``TokenSet.entropy``), which a model of rank ``d`` can reach (in the limit) when ``d > m``:
``log q(y)`` needs one coordinate and each concept one more. With ``d <= m`` the minimum is out
of reach, and the distance to it is the capacity the dimension lacks.

Instances of one ``d`` run together as one ``bmm`` (padded: padded tokens get logit ``-inf``,
padded contexts weight 0, so padding contributes nothing, exactly). The gradient is written out,
``dL/dlogits = w(x) (softmax - Q)``, and checked against autograd on an unbatched float64
reference (tests). Each instance stops on its own and its state is frozen from then on:

* ``"optimum"``: the exact loss is within ``tol`` nats of the optimum;
* ``"stationary"``: the loss fell by less than ``plateau`` nats over the last ``record_every``
  steps (a model that cannot reach the optimum and has stopped improving; a loss that *rose*
  is not stationary but a step size at the edge of stability, and training goes on);
* ``"max steps"``: neither, after ``steps`` steps (reported, never hidden);
* ``"diverged"``: the loss is not finite (``lr`` too large: 50 diverges at m = 32, 20 on some
  m = 64 models). ``origins_grid`` then trains that instance again from its start at half the
  step size (``max_halvings`` times at most) and reports the step size each run used.

The grid's instances: for each ``m`` in ``ms``, ``d`` in ``ds`` and seed, a latent-concept model
``LatentConceptModel(m, seed=seed)`` with ``n_tokens`` sampled tokens and ``n_contexts`` sampled
contexts (all of them where ``2^m`` / ``3^m`` fit), each context fixing every concept with
probability ``core_prob``. Two controls per ``(m, seed)`` isolate why linearity may stay low:

* ``capacity``: the same data at ``d = m + 1``, enough dimensions to reach the optimum;
* ``support``: the same model at the largest ``d`` with ``core_prob = 0.5`` (half the concepts
  fixed). With a sampled vocabulary of a few hundred tokens out of ``2^m``, a context fixing
  ``m / 2`` concepts leaves about one possible next token, so the data say nothing about how
  tokens differing in one concept relate (no log-odds to match): a look-up table is optimal.

mechlin's choices (the paper's settings could not be read here; docs/reproductions/jiang2024.md):
``core_prob = min(0.5, 3 / m)`` (about 3 fixed concepts per context), ``n_tokens = 512``,
``n_contexts = 1000`` (each with a partner differing in one fixed concept), ``lr = 20``,
``init_scale = 0.01``, ``tol = 0.02`` nats, ``plateau = 1e-5`` nats per ``record_every`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechlin import viz
from mechlin._checks import checked
from mechlin._store import ItemStore
from mechlin.errors import ArgumentError, OutOfRangeError
from mechlin.origins.latent import LatentConceptModel, TokenSet, build_tokens
from mechlin.origins.measures import (
    concept_gram,
    concept_pairs,
    linearity,
    random_pair_baseline,
    split_by_independence,
)
from mechlin.results import Result

ROLES = ("grid", "capacity", "support")
STATUSES = ("optimum", "stationary", "max steps", "diverged")
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval over seeds (``(mean, mean, mean)`` for one value)."""
    x = torch.tensor([v for v in values if not math.isnan(v)], dtype=torch.float64)
    if len(x) == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if len(x) == 1:
        return (mean, mean, mean)
    half = _T975.get(len(x) - 1, 1.96) * float(x.std()) / math.sqrt(len(x))
    return (mean, mean - half, mean + half)


@dataclass(frozen=True)
class Instance:
    """One trained model of the grid: its latent model, data, dimension and role."""

    m: int
    d: int
    seed: int
    core_prob: float
    role: str
    lcm: LatentConceptModel
    data: TokenSet  # restricted to the training contexts


def make_instance(
    m: int, d: int, seed: int, *, core_prob: float, role: str, n_tokens: int, n_contexts: int
) -> Instance:
    """The latent-concept model and data of one grid cell (module doc)."""
    lcm = LatentConceptModel(m, seed=seed)
    data = build_tokens(
        lcm,
        n_tokens=None if 2**m <= n_tokens else n_tokens,
        n_contexts=None if 3**m <= n_contexts else n_contexts,
        core_prob=core_prob,
        seed=seed,
    )
    return Instance(m, d, seed, core_prob, role, lcm, data)


@dataclass
class _Padded:
    """The instances of one ``d`` as padded tensors (float32; padding is inert)."""

    weight: Tensor  # (R, C) context weights (0 on padding), each row sums to 1
    target: Tensor  # (R, C, V) Q(y | x) (0 on padding)
    valid: Tensor  # (R, V) real tokens
    F: Tensor  # (R, C, d)
    G: Tensor  # (R, V, d)


def _pad(instances: Sequence[Instance], d: int, init_scale: float) -> _Padded:
    n = len(instances)
    c_max = max(len(i.data.contexts) for i in instances)
    v_max = max(len(i.data.tokens) for i in instances)
    weight = torch.zeros(n, c_max)
    target = torch.zeros(n, c_max, v_max)
    valid = torch.zeros(n, v_max, dtype=torch.bool)
    F = torch.zeros(n, c_max, d)
    G = torch.zeros(n, v_max, d)
    for r, inst in enumerate(instances):
        c, v = inst.data.target.shape
        weight[r, :c] = (inst.data.weight / inst.data.weight.sum()).float()
        target[r, :c, :v] = inst.data.target.float()
        valid[r, :v] = True
        gen = torch.Generator().manual_seed(inst.seed)
        s = init_scale / math.sqrt(d)
        G[r, :v] = torch.randn(v, d, generator=gen) * s
        F[r, :c] = torch.randn(c, d, generator=gen) * s
    return _Padded(weight, target, valid, F, G)


def gd_step(p: _Padded, lr: float, active: Tensor) -> None:
    """One full-batch gradient step on every active instance (the gradient written out)."""
    logits = torch.bmm(p.F, p.G.transpose(1, 2)).masked_fill(~p.valid[:, None, :], -math.inf)
    dlogits = p.weight[:, :, None] * (logits.softmax(-1) - p.target)  # (R, C, V)
    dlogits = dlogits * active[:, None, None].to(dlogits.dtype)
    grad_f = torch.bmm(dlogits, p.G)
    grad_g = torch.bmm(dlogits.transpose(1, 2), p.F)
    p.F.sub_(lr * grad_f)
    p.G.sub_(lr * grad_g)


def _unpadded(p: _Padded, r: int, inst: Instance) -> tuple[Tensor, Tensor]:
    c, v = inst.data.target.shape
    return p.F[r, :c].double(), p.G[r, :v].double()


def _measure(inst: Instance, f: Tensor, g: Tensor, step: int) -> dict[str, float]:
    from mechlin.origins.training import expected_loss  # noqa: PLC0415

    pairs_g = concept_pairs(inst.data.tokens)
    pairs_f = concept_pairs(inst.data.contexts)
    oi, od = split_by_independence(concept_gram(g, pairs_g), inst.lcm.independent_pairs())
    return {
        "loss": expected_loss(f, g, inst.data),
        "lin_g": float(linearity(g, pairs_g).nanmean()),
        "lin_f": float(linearity(f, pairs_f).nanmean()),
        "base_g": random_pair_baseline(g, 1000, seed=inst.seed + step),
        "orth_ind": oi,
        "orth_dep": od,
    }


_METRICS = ("loss", "lin_g", "lin_f", "base_g", "orth_ind", "orth_dep")


def train_group(
    instances: Sequence[Instance],
    *,
    steps: int,
    lr: float,
    init_scale: float,
    tol: float,
    plateau: float,
    record_every: int,
    state: dict[str, Any] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train instances sharing one ``d`` as one batched op; returns the final state.

    The state (``F``, ``G``, the step, the records, each instance's status) is handed to
    ``on_record`` after every record, and a run given it back resumes from it bit for bit.
    """
    d = instances[0].d
    if any(i.d != d for i in instances):
        raise ArgumentError("train_group takes instances of one d (origins_grid groups them)")
    p = _pad(instances, d, init_scale)
    n = len(instances)
    if state is None:
        state = {
            "step": 0,
            "records": {k: [[] for _ in range(n)] for k in (*_METRICS, "step")},
            "status": [""] * n,
            "stopped_at": [-1] * n,
        }
    else:
        p.F.copy_(state["F"])
        p.G.copy_(state["G"])
    optimum = [inst.data.entropy() for inst in instances]
    step = int(state["step"])
    bar = tqdm(total=steps, initial=step, disable=not progress, desc=f"d={d}")
    while True:
        if step % record_every == 0 or step == steps:
            recs = state["records"]
            if not recs["step"][0] or recs["step"][0][-1] != step:
                for r, inst in enumerate(instances):
                    if state["status"][r]:
                        continue  # frozen: its last record stands
                    f, g = _unpadded(p, r, inst)
                    got = _measure(inst, f, g, step)
                    for k in _METRICS:
                        recs[k][r].append(got[k])
                    recs["step"][r].append(step)
                    losses = recs["loss"][r]
                    if not math.isfinite(losses[-1]):
                        state["status"][r] = "diverged"  # lr too large: reported, frozen
                    elif losses[-1] - optimum[r] <= tol:
                        state["status"][r] = "optimum"
                    elif len(losses) > 1 and 0 <= losses[-2] - losses[-1] < plateau:
                        state["status"][r] = "stationary"
                    elif step >= steps:
                        state["status"][r] = "max steps"
                    if state["status"][r]:
                        state["stopped_at"][r] = step
                state["step"] = step
                state["F"], state["G"] = p.F.clone(), p.G.clone()
                if on_record is not None:
                    on_record(state)
        active = torch.tensor([not s for s in state["status"]])
        if step >= steps or not bool(active.any()):
            break
        gd_step(p, lr, active)
        step += 1
        bar.update(1)
    bar.close()
    state["optimum"] = optimum
    return state


@dataclass(frozen=True)
class OriginsGrid(Result):
    """Final linearity and orthogonality of a grid of latent-concept models, one row each."""

    _nonfinite: ClassVar[frozenset[str]] = frozenset(
        {"lin_g", "lin_f", "base_g", "orth_ind", "orth_dep", "trace"}
    )

    m: Int[Tensor, " run"]
    d: Int[Tensor, " run"]
    seed: Int[Tensor, " run"]
    core_prob: Float[Tensor, " run"]
    role: tuple[str, ...]  # "grid", "capacity" (d = m + 1) or "support" (core_prob 0.5)
    status: tuple[str, ...]  # "optimum", "stationary" or "max steps"
    stopped_at: Int[Tensor, " run"]
    lr: Float[Tensor, " run"]  # the step size it trained with (halved after a divergence)
    loss: Float[Tensor, " run"]  # exact expected loss at the end
    optimum: Float[Tensor, " run"]  # its closed-form minimum (conditional entropy)
    lin_g: Float[Tensor, " run"]  # unembedding linearity, mean over concepts
    lin_f: Float[Tensor, " run"]  # context linearity
    base_g: Float[Tensor, " run"]  # random token pairs (about 0)
    orth_ind: Float[Tensor, " run"]  # mean |cos| of independent concepts' directions in g
    orth_dep: Float[Tensor, " run"]  # ... of dependent ones
    n_tokens: Int[Tensor, " run"]
    n_contexts: Int[Tensor, " run"]
    mean_support: Float[Tensor, " run"]  # mean number of possible next tokens per context
    trace: Float[Tensor, "run record metric"]  # records: step, loss, lin_g, lin_f, orth i/d
    settings: dict[str, Any]

    def __post_init__(self) -> None:
        n = len(self.role)
        if len(self.status) != n or self.m.shape != (n,) or self.trace.shape[0] != n:
            raise ArgumentError("one role, status, m and trace per run")

    @property
    def excess(self) -> Tensor:
        """Loss above the optimum at the end (nats)."""
        return self.loss - self.optimum

    def to_frame(self) -> Any:
        """One row per run with its settings, status and final numbers."""
        import pandas as pd  # noqa: PLC0415

        rows = []
        for r in range(len(self.role)):
            rows.append(
                {
                    "role": self.role[r],
                    "m": int(self.m[r]),
                    "d": int(self.d[r]),
                    "seed": int(self.seed[r]),
                    "core_prob": float(self.core_prob[r]),
                    "status": self.status[r],
                    "steps": int(self.stopped_at[r]),
                    "lr": float(self.lr[r]),
                    "excess": float(self.excess[r]),
                    "lin_g": float(self.lin_g[r]),
                    "lin_f": float(self.lin_f[r]),
                    "base_g": float(self.base_g[r]),
                    "orth_ind": float(self.orth_ind[r]),
                    "orth_dep": float(self.orth_dep[r]),
                    "mean_support": float(self.mean_support[r]),
                }
            )
        return pd.DataFrame(rows)

    def cells(self) -> list[dict[str, Any]]:
        """One entry per (role, m, d, core_prob) over seeds: mean and 95% t-interval."""
        keys: dict[tuple[Any, ...], list[int]] = {}
        for r in range(len(self.role)):
            key = (self.role[r], int(self.m[r]), int(self.d[r]), round(float(self.core_prob[r]), 6))
            keys.setdefault(key, []).append(r)
        out = []
        for (role, m, d, cp), rows in keys.items():
            cell: dict[str, Any] = {"role": role, "m": m, "d": d, "core_prob": cp}
            cell["n_seeds"] = len(rows)
            cell["status"] = sorted({self.status[r] for r in rows})
            cell["lr"] = sorted({float(self.lr[r]) for r in rows})
            for name in ("excess", "lin_g", "lin_f", "base_g", "orth_ind", "orth_dep"):
                values = getattr(self, name)
                cell[name] = t_interval([float(values[r]) for r in rows])
            # dependent minus independent |cos|, paired within each seed's model
            gap = [float(self.orth_dep[r] - self.orth_ind[r]) for r in rows]
            cell["orth_gap"] = t_interval(gap)
            cell["orth_gap_positive"] = sum(g > 0 for g in gap)
            out.append(cell)
        return out

    def summary(self) -> str:
        lines = [
            f"latent-concept grid: {len(self.role)} runs, full-batch gradient descent on the "
            f"exact loss (lr {self.settings.get('lr')}, <= {self.settings.get('steps')} steps, "
            f"tol {self.settings.get('tol')} nats); mean over seeds [95% t-interval]"
        ]
        for c in self.cells():

            def f(k: str, c: dict[str, Any] = c) -> str:
                mean, lo, hi = c[k]
                return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"

            lines.append(
                f"  {c['role']:8s} m={c['m']:<3d} d={c['d']:<3d} core_prob={c['core_prob']:.3f}: "
                f"linearity g {f('lin_g')}, f {f('lin_f')}; |cos| independent "
                f"{f('orth_ind')} vs dependent {f('orth_dep')} (gap {f('orth_gap')}, "
                f"{c['orth_gap_positive']}/{c['n_seeds']} seeds > 0); excess loss {f('excess')} "
                f"({'/'.join(c['status'])}, lr {'/'.join(f'{x:g}' for x in c['lr'])})"
            )
        return "\n".join(lines)

    def plot(self, fig: Any = None) -> Any:
        """Linearity against d per m (controls marked), and |cos| independent vs dependent."""
        fig, ax = viz.figure(1, 2, fig=fig, figsize=(12, 4))
        cells = self.cells()
        for m in sorted({c["m"] for c in cells}):
            grid = sorted((c for c in cells if c["m"] == m and c["role"] == "grid"),
                          key=lambda c: c["d"])  # fmt: skip
            xs = [c["d"] for c in grid]
            ys = [c["lin_g"][0] for c in grid]
            err = [[c["lin_g"][0] - c["lin_g"][1] for c in grid],
                   [c["lin_g"][2] - c["lin_g"][0] for c in grid]]  # fmt: skip
            line = ax[0, 0].errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"m={m}")
            for c in cells:
                if c["m"] == m and c["role"] != "grid":
                    marker = "s" if c["role"] == "capacity" else "x"
                    ax[0, 0].plot(c["d"], c["lin_g"][0], marker, color=line[0].get_color(),
                                  label=f"m={m} {c['role']} control")  # fmt: skip
        ax[0, 0].set(xscale="log", xlabel="d", ylabel="linearity of g", ylim=(-0.1, 1.05))
        ticks = sorted({c["d"] for c in cells})
        ax[0, 0].set_xticks(ticks, [str(t) for t in ticks])
        ax[0, 0].minorticks_off()
        ax[0, 0].set_title("linearity at the end of training", fontsize=9)
        ax[0, 0].legend(fontsize=7)
        a = ax[0, 1]
        for k, c in enumerate(cells):
            a.errorbar([k - 0.1], [c["orth_ind"][0]], yerr=[[c["orth_ind"][0] - c["orth_ind"][1]],
                       [c["orth_ind"][2] - c["orth_ind"][0]]], fmt="o", color="C0",
                       label="independent" if k == 0 else None)  # fmt: skip
            a.errorbar([k + 0.1], [c["orth_dep"][0]], yerr=[[c["orth_dep"][0] - c["orth_dep"][1]],
                       [c["orth_dep"][2] - c["orth_dep"][0]]], fmt="s", color="C3",
                       label="dependent" if k == 0 else None)  # fmt: skip
        a.set_xticks(range(len(cells)))
        a.set_xticklabels([f"{c['role'][:4]} m{c['m']} d{c['d']}" for c in cells], rotation=90,
                          fontsize=7)  # fmt: skip
        a.set(ylabel="mean |cos| of concept directions in g")
        a.set_title("orthogonality at the end of training", fontsize=9)
        a.legend(fontsize=7)
        fig.tight_layout()
        return fig


@checked
def origins_grid(
    ms: Sequence[int] = (32, 64),
    ds: Sequence[int] = (4, 8, 16),
    seeds: Sequence[int] = (0, 1, 2),
    *,
    core_prob: float | None = None,
    controls: bool = True,
    n_tokens: int = 512,
    n_contexts: int = 1000,
    steps: int = 3000,
    lr: float | int = 20.0,
    init_scale: float | int = 0.01,
    tol: float | int = 0.02,
    plateau: float | int = 1e-5,
    record_every: int = 250,
    max_halvings: int = 3,
    out: str | Path | None = None,
    progress: bool = False,
) -> OriginsGrid:
    """Train every (m, d, seed) instance (and the controls) to convergence; see module doc.

    Args:
        ms, ds, seeds: the grid (``d`` may be far below ``m``).
        core_prob: the chance that a context fixes each concept; ``None``: ``min(0.5, 3/m)``.
        controls: add the capacity (``d = m + 1``) and support (``core_prob = 0.5``) runs.
        n_tokens, n_contexts: sampled vocabulary and contexts (all where they fit).
        steps, lr, init_scale: full-batch gradient descent on the exact loss.
        tol, plateau, record_every: the stopping rules (module doc).
        max_halvings: a run that diverges is trained again from its start at half the step
            size, up to this many times (the lr of each run is in the result).
        out: a directory; the state is saved after every record and a rerun resumes from it.
    """
    for name, values in (("ms", ms), ("ds", ds), ("seeds", seeds)):
        if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise ArgumentError(f"{name} must be a non-empty sequence of ints, got {values!r}")
    if min(ms) < 2 or min(ds) < 1:
        raise OutOfRangeError(f"need every m >= 2 and d >= 1, got ms={ms!r}, ds={ds!r}")
    if core_prob is not None and not 0 < core_prob <= 1:
        raise OutOfRangeError(f"core_prob={core_prob!r} is out of range: it must lie in (0, 1]")
    if steps < 0 or record_every < 1 or not lr > 0 or not init_scale > 0 or tol < 0:
        raise OutOfRangeError(
            "need steps >= 0, record_every >= 1, lr > 0, init_scale > 0, tol >= 0; got "
            f"steps={steps}, record_every={record_every}, lr={lr}, init_scale={init_scale}, "
            f"tol={tol}"
        )
    specs: list[tuple[int, int, int, float, str]] = []
    for m in ms:
        cp = min(0.5, 3 / m) if core_prob is None else float(core_prob)
        for seed in seeds:
            specs += [(m, d, seed, cp, "grid") for d in ds]
            if controls:
                specs.append((m, m + 1, seed, cp, "capacity"))
                if cp != 0.5:
                    specs.append((m, max(ds), seed, 0.5, "support"))
    specs = list(dict.fromkeys(specs))
    instances = [
        make_instance(m, d, s, core_prob=cp, role=role, n_tokens=n_tokens, n_contexts=n_contexts)
        for m, d, s, cp, role in specs
    ]
    settings = dict(
        ms=list(ms), ds=list(ds), seeds=list(seeds), core_prob=core_prob, controls=controls,
        n_tokens=n_tokens, n_contexts=n_contexts, steps=steps, lr=float(lr),
        init_scale=float(init_scale), tol=float(tol), plateau=float(plateau),
        record_every=record_every, max_halvings=max_halvings,
    )  # fmt: skip
    store = ItemStore(out, kind="origins_grid", settings=settings) if out is not None else None
    # (state, row in it, lr) of each instance; a diverged instance is trained again from its
    # start at half the step size, up to max_halvings times (its lr is reported per run)
    where: dict[int, tuple[dict[str, Any], int, float]] = {}
    pending = list(range(len(instances)))
    rate = float(lr)
    for halving in range(max_halvings + 1):
        by_d: dict[int, list[int]] = {}
        for k in pending:
            by_d.setdefault(instances[k].d, []).append(k)
        for d, idx in sorted(by_d.items()):
            key = f"d{d}" if halving == 0 else f"d{d}-lr{rate:g}"
            saved = store.get(key) if store is not None else None

            def save(state: dict[str, Any], key: str = key) -> None:
                if store is not None:
                    store.save(key, state)

            state = train_group(
                [instances[k] for k in idx], steps=steps, lr=rate,
                init_scale=float(init_scale), tol=float(tol), plateau=float(plateau),
                record_every=record_every, state=saved, on_record=save, progress=progress,
            )  # fmt: skip
            for j, k in enumerate(idx):
                where[k] = (state, j, rate)
        pending = [k for k in pending if where[k][0]["status"][where[k][1]] == "diverged"]
        if not pending:
            break
        rate /= 2
    if store is not None:
        store.finish({"runs": len(instances)})
    return _collect(instances, where, settings)


def _collect(
    instances: Sequence[Instance],
    where: dict[int, tuple[dict[str, Any], int, float]],
    settings: dict[str, Any],
) -> OriginsGrid:
    n = len(instances)
    final = {k: torch.full((n,), math.nan, dtype=torch.float64) for k in _METRICS}
    optimum = torch.zeros(n, dtype=torch.float64)
    rates = torch.zeros(n, dtype=torch.float64)
    status, stopped = [""] * n, torch.zeros(n, dtype=torch.long)
    n_rec = max(len(st["records"]["step"][j]) for st, j, _ in where.values())
    trace = torch.full((n, n_rec, 1 + len(_METRICS)), math.nan, dtype=torch.float64)
    for k, (st, j, rate) in where.items():
        recs = st["records"]
        for name in _METRICS:
            final[name][k] = recs[name][j][-1]
        optimum[k] = st["optimum"][j]
        rates[k] = rate
        status[k], stopped[k] = st["status"][j], st["stopped_at"][j]
        rows = torch.tensor([recs["step"][j], *(recs[m][j] for m in _METRICS)]).T
        trace[k, : len(rows)] = rows
    return OriginsGrid(
        m=torch.tensor([i.m for i in instances]),
        d=torch.tensor([i.d for i in instances]),
        seed=torch.tensor([i.seed for i in instances]),
        core_prob=torch.tensor([i.core_prob for i in instances], dtype=torch.float64),
        role=tuple(i.role for i in instances),
        status=tuple(status),
        stopped_at=stopped,
        lr=rates,
        loss=final["loss"],
        optimum=optimum,
        lin_g=final["lin_g"],
        lin_f=final["lin_f"],
        base_g=final["base_g"],
        orth_ind=final["orth_ind"],
        orth_dep=final["orth_dep"],
        n_tokens=torch.tensor([len(i.data.tokens) for i in instances]),
        n_contexts=torch.tensor([len(i.data.contexts) for i in instances]),
        mean_support=torch.tensor(
            [float((i.data.target > 0).sum(1).double().mean()) for i in instances],
            dtype=torch.float64,
        ),
        trace=trace,
        settings=settings,
    )
