"""The robustness experiments of Jiang et al. (2024) in one call: ``origins_sweep``.

From one base setting (the full data, ``d = base_d``, SGD) the sweep changes one factor at a
time, each for every seed: an incomplete context set (``context_fraction``), an incomplete
concept set (``token_fraction``), each ``d`` in ``ds`` (from well above to well below the
number of concepts), Adam instead of SGD, and optionally a large-``m`` model with a sampled
vocabulary (``large_m``; ``m >> d``). Each run is an ``OriginsRun``; ``OriginsSweep`` holds
them with one table (``to_frame``: a row per run) and one figure (final linearity per condition
against the random-pair baseline, and the orthogonality of independent vs dependent concepts).

One factor at a time rather than the full grid is mechlin's choice (the grid is 2 x 2 x len(ds)
x 2 x seeds runs); so are the defaults below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from mechlin import viz
from mechlin._checks import checked
from mechlin.errors import ArgumentError, EmptyInputError
from mechlin.origins.latent import LatentConceptModel
from mechlin.origins.training import OriginsRun, train_origins
from mechlin.results import Result


@dataclass(frozen=True)
class OriginsSweep(Result):
    """Runs of ``train_origins`` under the paper's robustness conditions."""

    conditions: tuple[str, ...]  # one per run, e.g. "base", "d=4", "incomplete contexts"
    runs: tuple[OriginsRun, ...]

    def __post_init__(self) -> None:
        if len(self.conditions) != len(self.runs):
            raise ArgumentError("one condition name per run")
        if not self.runs:
            raise EmptyInputError("a sweep needs at least one run")

    def to_frame(self) -> Any:
        """One row per run: condition, settings and the final numbers."""
        import pandas as pd  # noqa: PLC0415

        rows = []
        for cond, run in zip(self.conditions, self.runs, strict=True):
            s = run.settings
            rows.append(
                {
                    "condition": cond,
                    "m": s["n_concepts"],
                    "d": s["d"],
                    "optimizer": s["optimizer"],
                    "context_fraction": s["context_fraction"],
                    "token_fraction": s["token_fraction"],
                    "seed": s["seed"],
                    "optimum": run.optimum,
                    **run.final,
                }
            )
        return pd.DataFrame(rows)

    def by_condition(self) -> Any:
        """Means over seeds, one row per condition (in sweep order)."""
        frame = self.to_frame()
        order = list(dict.fromkeys(self.conditions))
        return frame.drop(columns=["optimizer"]).groupby("condition", sort=False).mean().loc[order]

    def summary(self) -> str:
        table = self.by_condition()
        lines = [
            f"{len(self.runs)} runs, {len(table)} conditions (means over seeds):",
            "  condition              loss-opt  lin g  lin f  rand g   |cos| ind  |cos| dep  rand",
        ]
        for cond, r in table.iterrows():
            lines.append(
                f"  {cond:22s} {r['excess_loss']:8.3f}  {r['unembed_linearity']:.3f}  "
                f"{r['context_linearity']:.3f}  {r['unembed_baseline']:+.3f}   "
                f"{r['orth_independent']:.3f}      {r['orth_dependent']:.3f}      "
                f"{r['orth_random']:.3f}"
            )
        return "\n".join(lines)

    def plot(self, fig: Any = None) -> Any:
        """Final linearity per condition (points = seeds) and |cos| independent vs dependent."""
        fig, ax = viz.figure(1, 2, fig=fig, figsize=(13, 4))
        frame = self.to_frame()
        order = list(dict.fromkeys(self.conditions))
        x = {c: i for i, c in enumerate(order)}
        xs = frame["condition"].map(x)
        a = ax[0, 0]
        a.scatter(xs - 0.1, frame["unembed_linearity"], label="unembedding g", marker="o")
        a.scatter(xs + 0.1, frame["context_linearity"], label="context f", marker="s")
        a.scatter(xs, frame["unembed_baseline"], label="g, random pairs", marker="x", c="gray")
        a.set_xticks(range(len(order)))
        a.set_xticklabels(order, rotation=30, ha="right", fontsize=8)
        a.set(
            ylabel="final linearity (mean pairwise cos)",
            ylim=(-0.1, 1.05),
            title="linearity under each condition",
        )
        a.axhline(0, c="gray", lw=0.5)
        a.legend(fontsize=7)
        a = ax[0, 1]
        a.scatter(xs - 0.1, frame["orth_independent"], label="independent pairs", marker="o")
        a.scatter(xs + 0.1, frame["orth_dependent"], label="dependent pairs", marker="s")
        a.scatter(xs, frame["orth_random"], label="random directions", marker="x", c="gray")
        a.set_xticks(range(len(order)))
        a.set_xticklabels(order, rotation=30, ha="right", fontsize=8)
        a.set(ylabel="mean |cos| of concept directions (g, Euclidean)", title="orthogonality")
        a.legend(fontsize=7)
        fig.tight_layout()
        return fig


@checked
def origins_sweep(
    *,
    n_concepts: int = 8,
    edge_prob: float | int = 0.3,
    base_d: int = 16,
    ds: Sequence[int] = (32, 4, 2),
    context_fraction: float | int = 0.3,
    token_fraction: float | int = 0.5,
    adam: bool = True,
    large_m: int | None = 32,
    large_m_d: int = 8,
    large_m_tokens: int = 512,
    large_m_contexts: int = 3000,
    large_m_core_prob: float | int = 0.15,
    seeds: Sequence[int] = (0, 1),
    steps: int = 2000,
    record_every: int = 250,
    progress: bool = False,
) -> OriginsSweep:
    """Train the base setting and each one-factor change for every seed (module doc).

    The latent-concept model of seed ``s`` is ``LatentConceptModel(n_concepts, edge_prob=...,
    seed=s)``; ``large_m=None`` leaves out the large-``m`` condition (``large_m_tokens`` sampled
    tokens, ``large_m_contexts`` sampled contexts, ``d = large_m_d``, each concept core with
    probability ``large_m_core_prob``: at 0.5 a context of 32 concepts fixes about 16 and
    leaves almost a single token, so the task is memorizing tokens, not concepts).
    """
    if not seeds:
        raise EmptyInputError("seeds is empty: pass at least one seed")
    plan: list[tuple[str, dict[str, Any]]] = [("base", {})]
    plan.append((f"contexts {context_fraction:.0%}", {"context_fraction": context_fraction}))
    plan.append((f"tokens {token_fraction:.0%}", {"token_fraction": token_fraction}))
    plan += [(f"d={d}", {"d": d}) for d in ds]
    if adam:
        plan.append(("adam", {"optimizer": "adam"}))
    if large_m is not None:
        plan.append(
            (
                f"m={large_m}, d={large_m_d}",
                {
                    "m": large_m,
                    "d": large_m_d,
                    "n_tokens": large_m_tokens,
                    "n_contexts": large_m_contexts,
                    "core_prob": large_m_core_prob,
                },
            )
        )
    conditions: list[str] = []
    runs: list[OriginsRun] = []
    jobs = [(name, kw, seed) for name, kw in plan for seed in seeds]
    for name, kw, seed in tqdm(jobs, disable=not progress, desc="origins sweep"):
        kw = dict(kw)
        lcm = LatentConceptModel(kw.pop("m", n_concepts), edge_prob=edge_prob, seed=seed)
        kw.setdefault("d", base_d)
        runs.append(train_origins(lcm, steps=steps, record_every=record_every, seed=seed, **kw))
        conditions.append(name)
    return OriginsSweep(conditions=tuple(conditions), runs=tuple(runs))
