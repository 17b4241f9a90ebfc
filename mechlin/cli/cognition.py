"""Cognition vs expression on the command line: ``mechlin cognition`` probes what one or more
models know about multiple-choice answers in their hidden states (cognition) against what they
answer (expression), on the shipped sets or ARC-layout JSONL files, loading each model only
when the analysis reaches it."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mechlin.cli._common import (
    MODEL_HELP,
    Command,
    _figure,
    _nonnegative,
    _positive,
    _Run,
)
from mechlin.errors import ArgumentError, NotInResultError


class _LazyModels(Mapping[str, Any]):
    """Model names -> models, each loaded when the analysis reaches it (one in memory at a time)."""

    def __init__(self, run: _Run, names: Sequence[str]) -> None:
        self.run, self.names = run, list(names)

    def __getitem__(self, name: str) -> Any:
        if name not in self.names:
            raise NotInResultError(f"no model {name!r} on this command line: {self.names}")
        return self.run.model(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _mcq_sets(a: argparse.Namespace) -> list[Any]:
    from mechlin.datasets.mcq import load_mcq  # noqa: PLC0415

    out = []
    for name in [*(a.datasets or ([] if a.mcq else ["arc_easy"])), *map(str, a.mcq or [])]:
        full = load_mcq(name)
        out.append(full if a.n_items >= len(full) else full.sample(a.n_items, seed=a.seed))
    return out


def cmd_cognition(run: _Run) -> None:
    from mechlin.cognition import cognition_vs_expression  # noqa: PLC0415
    from mechlin.datasets.mcq import load_mcq  # noqa: PLC0415

    a = run.args
    if len(set(a.models)) != len(a.models):
        raise ArgumentError(f"a model is named twice: {a.models}")
    if a.n_items < 3:
        raise ArgumentError(
            f"--n-items must be at least 3 (train, validation, test), got {a.n_items}"
        )
    if max(a.pass_k) > a.n_samples:
        raise ArgumentError(f"--pass-k {max(a.pass_k)} needs --n-samples >= {max(a.pass_k)}")
    datasets = _mcq_sets(a)
    # few-shot examples from ARC-Easy *test* items: disjoint from the shipped dev/test sets
    shot_pool = load_mcq("arc_easy_test").sample(200, seed=a.seed) if max(a.shots) > 0 else None
    run.status(
        f"cognition (probe) and expression (answers) of {len(a.models)} model(s) on "
        f"{', '.join(f'{d.name} ({len(d)} items)' for d in datasets)}"
    )
    result = cognition_vs_expression(
        _LazyModels(run, a.models),
        datasets,
        shots=tuple(a.shots),
        shot_pool=shot_pool,
        pass_k=tuple(a.pass_k),
        n_samples=a.n_samples,
        probe=a.probe,
        pca_dim=a.pca_dim,
        seed=a.seed,
        batch_size=a.batch_size,
        device=a.device,
        progress=run.progress,
    )
    gap = result.to_frame().pivot_table(
        index=["model", "dataset"], columns=["metric", "shots"], values="gap"
    )
    sections = [
        ("Figure", _figure(result)),
        ("The gap: cognition - expression", gap.to_html(float_format="%.3f")),
        ("Table", result.to_frame().to_html(index=False, float_format="%.3f")),
    ]
    sections += [(f"Probe: {p.model_name} / {p.dataset}", _figure(p)) for p in result.probes]
    run.finish(f"Cognition vs expression ({', '.join(a.models)})", result, sections)


COMMANDS: dict[str, Command] = {
    "cognition": (
        cmd_cognition,
        "cognition (hidden-state probe) vs expression (answers) on multiple-choice sets",
        "mechlin cognition smollm2-135m --n-items 24\n"
        "  mechlin cognition smollm2-135m gemma-3-270m --datasets arc_easy openbookqa "
        "--shots 0 2 --pass-k 1 4\n"
        "  mechlin cognition smollm2-135m --mcq my_questions.jsonl --n-items 60",
    ),
}


def add_arguments(p: Mapping[str, argparse.ArgumentParser]) -> None:
    """The arguments of ``cognition``."""
    g = p["cognition"]
    g.add_argument("models", nargs="+", metavar="model", help=MODEL_HELP + " (several: correlated)")
    g.add_argument(
        "--datasets",
        nargs="+",
        choices=("arc_easy", "arc_challenge", "openbookqa", "commonsenseqa"),
        help="shipped multiple-choice sets (default: arc_easy)",
    )
    g.add_argument("--mcq", type=Path, nargs="+", help="multiple-choice JSONL files (ARC layout)")
    g.add_argument("--n-items", type=int, default=24, help="items per dataset (default: 24)")
    g.add_argument("--shots", type=_nonnegative, nargs="+", default=[0], help="few-shot examples")
    g.add_argument("--pass-k", type=_positive, nargs="+", default=[1, 4], help="pass@k values")
    g.add_argument("--n-samples", type=_positive, default=4, help="sampled letters per item")
    g.add_argument("--probe", choices=("letter", "option"), default="letter")
    g.add_argument("--pca-dim", type=_positive, default=16, help="PCA width before the probe")
    g.add_argument("--batch-size", type=_positive, default=16)
