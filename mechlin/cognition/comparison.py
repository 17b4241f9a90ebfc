"""Cognition vs expression across models or checkpoints (Yan et al. 2024, arXiv 2405.16964).

For every model (a checkpoint, a training step, another model) and every multiple-choice set,
``cognition_vs_expression`` measures

- cognition: the best-layer held-out accuracy of a linear probe for the right answer
  (``probe_cognition``), with the per-layer curve;
- expression: the model's own answers (``expression_scores``): cloze ``acc`` / ``acc_norm``,
  letter accuracy, greedy letter generation, and pass@k of sampled letters, for each number of
  few-shot examples in ``shots``;
- the gap, cognition minus expression;

and, across all (model, dataset) points, the Pearson and Spearman correlations of cognition
with each expression score (scipy, with p-values). Yan et al. report on Baichuan checkpoints that
cognition is set during pretraining, expression grows in SFT/RLHF, the two correlate with
cognition above expression, and few-shot prompting and repeated sampling narrow the gap.

Pitfalls: correlations over a handful of checkpoints have wide uncertainty (the p-values say
so; fewer than 3 points give NaN). Points from different datasets share one correlation, so a
dataset effect (easy sets high on both axes) can produce a correlation no checkpoint trend
supports: ``correlation(..., dataset=...)`` restricts it to one set.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechlin import viz
from mechlin._checks import checked
from mechlin.cognition.expression import ExpressionScores, SampleFrom, expression_scores
from mechlin.cognition.probes import CognitionProbe, ProbeKind, Select, probe_cognition
from mechlin.datasets.mcq import MCQDataset
from mechlin.errors import (
    ArgumentError,
    ArgumentTypeError,
    EmptyInputError,
    NotInResultError,
    OutOfRangeError,
)
from mechlin.models import load_model
from mechlin.results import Result

METRICS = ("acc", "acc_norm", "letter", "generated")


@dataclass(frozen=True)
class CognitionExpression(Result):
    """Cognition (probe) and expression (answers) of several models on several datasets.

    ``probes[m * n_datasets + d]`` is model ``m`` on dataset ``d``; ``expressions`` is ordered
    model, dataset, shots (``[(m * n_datasets + d) * n_shots + s]``).
    """

    model_names: tuple[str, ...]
    datasets: tuple[str, ...]
    shots: tuple[int, ...]
    pass_k: tuple[int, ...]
    probes: tuple[CognitionProbe, ...]
    expressions: tuple[ExpressionScores, ...]

    def __post_init__(self) -> None:
        n_md = len(self.model_names) * len(self.datasets)
        if len(self.probes) != n_md or len(self.expressions) != n_md * len(self.shots):
            raise ArgumentError("probes need one entry per (model, dataset), expressions per shots")

    # ------------------------------------------------------------ views

    def _index(self, model: int, dataset: int) -> int:
        return model * len(self.datasets) + dataset

    def probe(self, model: str, dataset: str) -> CognitionProbe:
        return self.probes[self._index(self._m(model), self._d(dataset))]

    def expression_scores(self, model: str, dataset: str, shots: int = 0) -> ExpressionScores:
        s = self._s(shots)
        return self.expressions[self._index(self._m(model), self._d(dataset)) * len(self.shots) + s]

    def _m(self, name: str) -> int:
        if name not in self.model_names:
            raise NotInResultError(f"no model {name!r}; models: {list(self.model_names)}")
        return self.model_names.index(name)

    def _d(self, name: str) -> int:
        if name not in self.datasets:
            raise NotInResultError(f"no dataset {name!r}; datasets: {list(self.datasets)}")
        return self.datasets.index(name)

    def _s(self, shots: int) -> int:
        if shots not in self.shots:
            raise NotInResultError(f"no {shots}-shot scores; shots measured: {list(self.shots)}")
        return self.shots.index(shots)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return (*METRICS, *(f"pass@{k}" for k in self.pass_k))

    @property
    def cognition(self) -> Float[Tensor, "model dataset"]:
        """Best-layer held-out probe accuracy of each model on each dataset."""
        values = [p.cognition for p in self.probes]
        return torch.tensor(values).reshape(len(self.model_names), len(self.datasets))

    def expression(self, metric: str = "letter", shots: int = 0) -> Float[Tensor, "model dataset"]:
        """One expression score of each model on each dataset (``metric_names``)."""
        if metric not in self.metric_names:
            raise NotInResultError(f"no metric {metric!r}; metrics: {list(self.metric_names)}")
        s = self._s(shots)
        values = [
            self.expressions[i * len(self.shots) + s].metrics(self.pass_k)[metric]
            for i in range(len(self.probes))
        ]
        return torch.tensor(values).reshape(len(self.model_names), len(self.datasets))

    def gap(self, metric: str = "letter", shots: int = 0) -> Float[Tensor, "model dataset"]:
        """Cognition minus expression (positive: the states know more than the model says)."""
        return self.cognition - self.expression(metric, shots)

    def correlation(
        self, metric: str = "letter", shots: int = 0, *, dataset: str | None = None
    ) -> dict[str, float]:
        """Pearson and Spearman correlation of cognition with ``metric`` over the points."""
        from scipy import stats  # noqa: PLC0415

        cx, ey = self.cognition, self.expression(metric, shots)
        if dataset is not None:
            d = self._d(dataset)
            cx, ey = cx[:, d], ey[:, d]
        x, y = cx.flatten().double().numpy(), ey.flatten().double().numpy()
        nan = dict(
            pearson_r=math.nan,
            pearson_p=math.nan,
            spearman_r=math.nan,
            spearman_p=math.nan,
            n=float(len(x)),
        )
        if len(x) < 3 or x.std() == 0 or y.std() == 0:
            return nan
        pr = stats.pearsonr(x, y)
        sr = stats.spearmanr(x, y)
        return dict(
            pearson_r=float(pr.statistic),
            pearson_p=float(pr.pvalue),
            spearman_r=float(sr.statistic),
            spearman_p=float(sr.pvalue),
            n=float(len(x)),
        )

    # ------------------------------------------------------------ the contract

    def summary(self) -> str:
        lines = [
            f"Cognition vs expression: {len(self.model_names)} model(s) x "
            f"{len(self.datasets)} dataset(s); shots {list(self.shots)}; "
            f"probe {self.probes[0].probe}, layer chosen on {self.probes[0].select}"
        ]
        head = f"  {'model':<22}{'dataset':<16}{'layer':>6}{'cogn.':>7}{'letter':>8}{'acc':>7}"
        head += f"{'acc_n':>7}"
        head += "".join(f"{'p@' + str(k):>7}" for k in self.pass_k)
        lines.append(head)
        cog = self.cognition
        for m, name in enumerate(self.model_names):
            for d, ds in enumerate(self.datasets):
                e = self.expressions[self._index(m, d) * len(self.shots)].metrics(self.pass_k)
                layer = self.probes[self._index(m, d)].best_layer
                row = f"  {name[:21]:<22}{ds[:15]:<16}{layer:>6}{float(cog[m, d]):>7.3f}"
                row += f"{e['letter']:>8.3f}{e['acc']:>7.3f}{e['acc_norm']:>7.3f}"
                row += "".join(f"{e[f'pass@{k}']:>7.3f}" for k in self.pass_k)
                lines.append(row)
        for shots in self.shots:
            c = self.correlation("letter", shots)
            if not math.isnan(c["pearson_r"]):
                lines.append(
                    f"  cognition vs letter accuracy ({shots}-shot, n={int(c['n'])}): Pearson "
                    f"{c['pearson_r']:+.2f} (p={c['pearson_p']:.2g}), Spearman "
                    f"{c['spearman_r']:+.2f} (p={c['spearman_p']:.2g})"
                )
        return "\n".join(lines)

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        rows = []
        cog = self.cognition
        for m, name in enumerate(self.model_names):
            for d, ds in enumerate(self.datasets):
                p = self.probes[self._index(m, d)]
                for s, shots in enumerate(self.shots):
                    e = self.expressions[self._index(m, d) * len(self.shots) + s]
                    for metric, value in e.metrics(self.pass_k).items():
                        rows.append(
                            dict(
                                model=name,
                                dataset=ds,
                                shots=shots,
                                metric=metric,
                                expression=value,
                                cognition=float(cog[m, d]),
                                gap=float(cog[m, d]) - value,
                                best_layer=p.best_layer,
                                chance=e.chance,
                            )
                        )
        return pd.DataFrame(rows)

    def plot(self, fig: Any = None) -> Any:

        fig, axes = viz.figure(2, 2, fig=fig, figsize=(12, 8))
        x = list(range(len(self.model_names)))
        ax = axes[0, 0]
        cog = self.cognition.mean(1)
        ax.plot(x, cog.tolist(), "o-", color="tab:blue", lw=2, label="cognition (probe)")
        for metric, style in (("letter", "s--"), ("acc", "^:"), ("acc_norm", "v:")):
            ax.plot(x, self.expression(metric, self.shots[0]).mean(1).tolist(), style, label=metric)
        chance = sum(p.chance for p in self.probes) / len(self.probes)
        ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance")
        ax.set_xticks(x, [n[:18] for n in self.model_names], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(f"accuracy (mean of {len(self.datasets)} dataset(s))")
        ax.set_title(f"cognition and expression per model ({self.shots[0]}-shot)")
        ax.legend(fontsize=7)

        ax = axes[0, 1]
        for m, name in enumerate(self.model_names):
            curves = torch.stack(
                [self.probes[self._index(m, d)].test_acc for d in range(len(self.datasets))]
            ).mean(0)
            ax.plot(range(len(curves)), curves.tolist(), ".-", label=name[:18])
        ax.axhline(chance, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("layer (resid_post)")
        ax.set_ylabel("held-out probe accuracy")
        ax.set_title("cognition per layer")
        ax.legend(fontsize=7)

        ax = axes[1, 0]
        p = self.probes[self._index(len(self.model_names) - 1, 0)]
        pts, lab = p.projection, p.projection_label
        for c in sorted(set(lab.tolist())):
            sel = lab == c
            name = "ABCDEFGHIJ"[c] if p.probe == "letter" else ("right" if c else "wrong")
            ax.scatter(pts[sel, 0].tolist(), pts[sel, 1].tolist(), s=10, alpha=0.7, label=name)
        ax.set_title(
            f"PCA of hidden states, layer {p.best_layer}\n"
            f"{self.model_names[-1][:20]} / {self.datasets[0]}, by correct option",
            fontsize=9,
        )
        ax.legend(fontsize=7)

        ax = axes[1, 1]
        width = 0.8 / max(1, len(self.shots) + len(self.pass_k))
        for j, shots in enumerate(self.shots):
            ax.bar(
                [i + j * width for i in x],
                self.expression("letter", shots).mean(1).tolist(),
                width,
                label=f"letter, {shots}-shot",
            )
        for j, k in enumerate(self.pass_k):
            ax.bar(
                [i + (len(self.shots) + j) * width for i in x],
                self.expression(f"pass@{k}", self.shots[0]).mean(1).tolist(),
                width,
                label=f"pass@{k}",
                alpha=0.8,
            )
        ax.plot(
            [i + 0.4 - width / 2 for i in x],
            cog.tolist(),
            "o-",
            color="tab:blue",
            label="cognition",
        )
        ax.set_xticks(
            [i + 0.4 - width / 2 for i in x],
            [n[:18] for n in self.model_names],
            rotation=30,
            ha="right",
            fontsize=7,
        )
        ax.set_ylim(0, 1)
        ax.set_title("bridging the gap: few-shot and pass@k vs cognition")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig

    def report(
        self, path: str | os.PathLike[str], *, title: str = "Cognition vs expression"
    ) -> Path:
        """One offline HTML page: summary, figure, per-probe curves, the table."""

        sections = [
            ("Summary", f"<pre>{html.escape(self.summary())}</pre>"),
            ("Figure", viz.plot_html(self)),
            ("Table", self.to_frame().to_html(index=False, float_format="%.3f")),
        ]
        return viz.write_report(path, title, sections)


# ---------------------------------------------------------------- the analysis


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


@checked
def cognition_vs_expression(
    models: Mapping[str, Any],
    datasets: MCQDataset | Sequence[MCQDataset],
    *,
    shots: Sequence[int] = (0,),
    shot_pool: MCQDataset | None = None,
    pass_k: Sequence[int] = (1,),
    n_samples: int = 16,
    temperature: float | int = 1.0,
    sample_from: SampleFrom = "letters",
    probe: ProbeKind = "letter",
    pca_dim: int | None = 64,
    C: float | int = 1.0,
    test_fraction: float = 0.3,
    val_fraction: float = 0.2,
    select: Select = "validation",
    seed: int = 0,
    batch_size: int = 16,
    device: str | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> CognitionExpression:
    """Cognition and expression of each model on each dataset, and their correlation.

    ``models`` maps a name to a loaded model or to anything ``mechlin.load_model`` loads (a
    bundled name, a directory written by ``save_pretrained``); names are loaded one at a time
    on ``device`` and dropped after use. ``out=`` keeps every hidden-state collection and
    expression score on disk under ``out/<model>/<dataset>/`` so an interrupted run resumes.
    """
    if not isinstance(models, Mapping):
        raise ArgumentTypeError(f"models must map names to models, not {type(models).__name__}")
    if not models:
        raise EmptyInputError("models is empty: pass at least one {name: model or directory}")
    if isinstance(datasets, MCQDataset):
        datasets = [datasets]
    datasets = list(datasets)
    if not datasets:
        raise EmptyInputError("datasets is empty: pass at least one MCQDataset")
    if len({d.name for d in datasets}) != len(datasets):
        raise ArgumentError(f"dataset names repeat: {[d.name for d in datasets]}")
    shots, pass_k = tuple(shots), tuple(pass_k)
    if not shots:
        raise EmptyInputError("shots is empty: pass e.g. shots=(0,)")
    if pass_k and max(pass_k) > n_samples:
        raise OutOfRangeError(
            f"pass@k with k={max(pass_k)} needs at least k samples; n_samples={n_samples}"
        )
    if pass_k and min(pass_k) < 1:
        raise OutOfRangeError(f"pass_k values must be >= 1, got {list(pass_k)}")
    probes: list[CognitionProbe] = []
    expressions: list[ExpressionScores] = []
    for name, spec in tqdm(models.items(), desc="models", disable=not progress or len(models) < 2):
        model = _load(spec, device)
        for ds in datasets:
            where = Path(out) / _slug(name) / _slug(ds.name) if out is not None else None
            probes.append(
                probe_cognition(
                    model,
                    ds,
                    probe=probe,
                    pca_dim=pca_dim,
                    C=C,
                    test_fraction=test_fraction,
                    val_fraction=val_fraction,
                    select=select,
                    seed=seed,
                    batch_size=batch_size,
                    out=where / "states" if where else None,
                    progress=progress,
                )
            )
            for k in shots:
                expressions.append(
                    expression_scores(
                        model,
                        ds,
                        shots=k,
                        shot_pool=shot_pool,
                        n_samples=n_samples if pass_k else 0,
                        temperature=temperature,
                        sample_from=sample_from,
                        seed=seed,
                        batch_size=batch_size,
                        out=where / f"expression_{k}shot" if where else None,
                        progress=progress,
                    )
                )
        del model
    return CognitionExpression(
        model_names=tuple(models),
        datasets=tuple(d.name for d in datasets),
        shots=shots,
        pass_k=pass_k,
        probes=tuple(probes),
        expressions=tuple(expressions),
    )


def _load(spec: Any, device: str | None) -> Any:
    if isinstance(spec, str | os.PathLike):
        return load_model(str(spec), device=device)
    if not hasattr(spec, "cfg") or not hasattr(spec, "to_tokens"):
        raise ArgumentTypeError(
            f"a model must be a hooked model or a name/directory load_model reads, not "
            f"{type(spec).__name__}"
        )
    return spec
