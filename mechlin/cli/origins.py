"""The origins of linear representations on the command line: ``mechlin origins`` trains the
latent-concept model and follows linearity as the loss falls, optionally runs the robustness
sweep, and with ``--model`` checks the alignment of context and unembedding directions on a
real model."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mechlin.cli._common import Command, _figure, _positive, _pre, _Run, _say, read_pairs


def cmd_origins(run: _Run) -> None:
    from mechlin.origins import LatentConceptModel, origins_sweep, train_origins  # noqa: PLC0415

    a = run.args
    run.status(f"training the latent-concept model ({a.n_concepts} concepts, {a.steps} steps)")
    lcm = LatentConceptModel(a.n_concepts, seed=a.seed)
    result = train_origins(
        lcm, steps=a.steps, seed=a.seed, record_every=max(1, a.steps // 20), progress=run.progress
    )
    sections = [("One run: linearity as the loss falls", _figure(result))]
    if a.sweep:
        run.status("robustness sweep")
        sweep = origins_sweep(
            n_concepts=a.n_concepts,
            seeds=(a.seed,),
            steps=a.steps,
            record_every=max(1, a.steps // 8),
            progress=run.progress,
        )
        sweep.save(run.out / "sweep.pt")
        _say(sweep.summary())
        sections.append(("Robustness sweep", _pre(sweep.summary()) + _figure(sweep)))
    if a.model:
        from mechlin.directions import concept_directions  # noqa: PLC0415
        from mechlin.origins import default_contexts, embedding_unembedding_alignment  # noqa: PLC0415

        model = run.model(a.model)
        pairs: Any = read_pairs(a.pairs) if a.pairs else a.concepts
        dirs = concept_directions(model, pairs, too_few="skip")
        run.status("context directions vs unembedding directions")
        align = embedding_unembedding_alignment(
            model, dirs, default_contexts(dirs, max_pairs=a.max_pairs), progress=run.progress
        )
        align.save(run.out / "alignment.pt")
        _say(align.summary())
        sections.append((f"{a.model}: alignment", _pre(align.summary()) + _figure(align)))
    run.finish("Origins of linear representations", result, sections)


COMMANDS: dict[str, Command] = {
    "origins": (
        cmd_origins,
        "origins of linear representations (latent-concept model)",
        "mechlin origins --steps 600\n"
        '  mechlin origins --steps 600 --model smollm2-135m --concepts "male -> female" '
        '"lower -> upper"',
    ),
}


def add_arguments(p: Mapping[str, argparse.ArgumentParser]) -> None:
    """The arguments of ``origins``."""
    o = p["origins"]
    o.add_argument("--n-concepts", type=_positive, default=8)
    o.add_argument("--steps", type=_positive, default=2000)
    o.add_argument("--sweep", action="store_true", help="also run the robustness sweep")
    o.add_argument("--model", help="also check embedding-unembedding alignment on this model")
    o.add_argument(
        "--concepts",
        nargs="+",
        default=["male -> female", "English -> French", "noun -> plural", "lower -> upper"],
    )
    o.add_argument("--pairs", type=Path, help="concept pairs file (concept, base, target)")
    o.add_argument("--max-pairs", type=_positive, default=10, help="word pairs per concept")
