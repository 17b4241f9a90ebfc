"""Neurons on the command line: ``mechlin neurons`` (sparse probing of which neurons carry a
feature, on the shipped feature datasets or a labelled texts file, with verdicts and the best
neurons shown on text) and ``mechlin superposition`` (toy models of superposition: the phase
diagram and the capacity allocation)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mechlin.cli._common import (
    MODEL_HELP,
    Command,
    _figure,
    _positive,
    _pre,
    _Run,
    _say,
    read_texts,
)
from mechlin.errors import ArgumentError


def _feature_datasets(model: Any, a: argparse.Namespace) -> dict[str, Any]:
    from mechlin.datasets import features as fd  # noqa: PLC0415

    if a.texts:
        ds = read_texts(a.texts, pooling=a.pooling)
        return {ds.name: ds}
    out: list[Any] = []
    for name in a.features:
        if name == "language":
            out.append(fd.language_identity(n_per_language=a.n_per_class))
        elif name == "compound":
            out += fd.compound_words(
                bigrams=fd.COMPOUND_BIGRAMS[:3], n_per_class=a.n_per_class, context_words=12
            ).values()
        elif name == "properties":
            out += fd.text_properties(
                model.tokenizer, n_per_class=a.n_per_class, context_words=12
            ).values()
        elif name == "position":
            out.append(fd.position(model.tokenizer, n_per_class=a.n_per_class))
        elif name == "country":
            out.append(fd.country_in_europe())
    return {ds.name: ds for ds in out}


def cmd_neurons(run: _Run) -> None:
    from mechlin.datasets.features import broad_text  # noqa: PLC0415
    from mechlin.neurons import classify_neurons  # noqa: PLC0415
    from mechlin.neurons.verdicts import neuron_activations_html  # noqa: PLC0415

    a = run.args
    if a.n_per_class < 4:
        raise ArgumentError(f"--n-per-class must be at least 4, got {a.n_per_class}")
    model = run.model(a.model)
    datasets = _feature_datasets(model, a)
    run.status(f"probing {len(datasets)} datasets: {', '.join(datasets)}")
    report = classify_neurons(
        model,
        datasets,
        broad_texts=broad_text(n=a.n_broad),
        layers=a.layers,
        n_ablation_texts=min(a.n_broad, 8),
        seed=a.seed,
        progress=run.progress,
    )
    best = list(dict.fromkeys((v.layer, v.neuron) for v in report.verdicts))[:6]
    texts = [t for ds in datasets.values() for t in ds.texts[:: max(1, len(ds) // 3)][:3]][:8]
    view = neuron_activations_html(model, texts, best)
    path = report.report(
        run.out / "report.html",
        extra=[("Best neurons on text (circuitsvis)", view), ("Summary", _pre(report.summary()))],
    )
    saved = report.save(run.out / "result.pt")
    _say(report.summary())
    _say(report.to_frame().drop(columns=["reason"]).to_string(index=False))
    _say(f"report: {path}")
    _say(f"result: {saved} (load with mechlin.NeuronReport.load)")


def cmd_superposition(run: _Run) -> None:
    from mechlin.neurons import superposition_sweep  # noqa: PLC0415

    a = run.args
    run.status(f"training toy models ({a.grid}x{a.grid} phase grid, {a.steps} steps each)")
    sweep = superposition_sweep(
        grid=a.grid,
        n_seeds=a.seeds,
        steps=a.steps,
        lr=a.lr,
        seed=a.seed,
        device=a.device or "cpu",
        progress=run.progress,
    )
    run.finish(
        "Toy models of superposition",
        sweep,
        [
            ("Phase diagram (n=2, d=1)", _figure(sweep.phase) + _pre(sweep.phase.summary())),
            ("Capacity allocation", _figure(sweep.capacity) + _pre(sweep.capacity.summary())),
        ],
    )


COMMANDS: dict[str, Command] = {
    "neurons": (
        cmd_neurons,
        "sparse probing: which neurons carry a feature, with verdicts",
        "mechlin neurons smollm2-135m --features language --n-per-class 20 --layers 3 9 15\n"
        "  mechlin neurons smollm2-135m --texts labelled.csv --pooling mean",
    ),
    "superposition": (
        cmd_superposition,
        "toy models of superposition: phase diagram and capacity",
        "mechlin superposition --grid 5 --steps 800 --lr 1e-2 --seeds 1",
    ),
}


def add_arguments(p: Mapping[str, argparse.ArgumentParser]) -> None:
    """The arguments of ``neurons`` and ``superposition``."""
    n = p["neurons"]
    n.add_argument("model", help=MODEL_HELP)
    n.add_argument("--texts", type=Path, help="labelled texts file (text, label)")
    n.add_argument(
        "--features",
        nargs="+",
        default=["language"],
        choices=("language", "compound", "properties", "position", "country"),
        help="shipped feature datasets (default: language)",
    )
    n.add_argument("--pooling", choices=("mean", "max", "last"), default="mean")
    n.add_argument("--n-per-class", type=int, default=20, help="examples per class")
    n.add_argument("--layers", type=int, nargs="+", help="layers to probe (default: all)")
    n.add_argument("--n-broad", type=_positive, default=32, help="broad texts for the checks")

    s = p["superposition"]
    s.add_argument("--grid", type=_positive, default=10, help="phase diagram: values per axis")
    s.add_argument("--steps", type=_positive, default=5000, help="training steps per toy model")
    s.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    s.add_argument("--seeds", type=_positive, default=2, help="seeds per setting")
