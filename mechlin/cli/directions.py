"""Concept directions on the command line: ``mechlin concepts`` estimates linear concept
directions from word pairs (shipped concepts or a pairs file) under the causal and the Euclidean
inner product, compares their orthogonality and runs the linearity test against random pairs."""

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
    read_pairs,
)


def cmd_concepts(run: _Run) -> None:
    from mechlin.directions import concept_directions, linearity_test, orthogonality  # noqa: PLC0415

    a = run.args
    model = run.model(a.model)
    chosen: Any = read_pairs(a.pairs) if a.pairs else (a.concepts or None)
    run.status("estimating concept directions (causal and Euclidean inner products)")
    causal = concept_directions(model, chosen, too_few="skip")
    euclid = concept_directions(model, chosen, inner_product="euclidean", too_few="skip")
    orth = orthogonality(causal, euclid)
    run.status(f"linearity test against {a.n_random} random pairs")
    lin = linearity_test(model, causal, n_random=a.n_random, seed=a.seed)
    means = orth.mean_abs_off_diagonal
    lines = (
        f"mean |off-diagonal| of the Gram matrix: causal {means['causal']:.3f}, "
        f"Euclidean {means['euclidean']:.3f}; failing linearity: {list(lin.failed) or 'none'}"
    )
    lin.save(run.out / "linearity.pt")
    _say(lines)
    run.finish(
        f"Concept directions ({a.model})",
        causal,
        [
            ("Directions", _figure(causal)),
            ("Orthogonality: causal vs Euclidean", _pre(lines) + _figure(orth)),
            (
                "Linearity: held-out pairs vs random pairs",
                lin.to_frame().to_html(index=False, float_format="%.3f") + _figure(lin),
            ),
        ],
    )


COMMANDS: dict[str, Command] = {
    "concepts": (
        cmd_concepts,
        "linear concept directions: orthogonality and linearity tests",
        'mechlin concepts smollm2-135m --concepts "male -> female" "English -> French" '
        '"noun -> plural"\n  mechlin concepts gemma-3-270m --pairs pairs.json',
    ),
}


def add_arguments(p: Mapping[str, argparse.ArgumentParser]) -> None:
    """The arguments of ``concepts``."""
    c = p["concepts"]
    c.add_argument("model", help=MODEL_HELP)
    c.add_argument("--concepts", nargs="+", help="shipped concept names (default: all)")
    c.add_argument("--pairs", type=Path, help="concept pairs file (concept, base, target)")
    c.add_argument("--n-random", type=_positive, default=10_000, help="random pairs (Park: 1e5)")
