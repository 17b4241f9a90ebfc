"""``mechlin models``: the bundled models, whether each is installed and cached, and where the
cache lies; with ``--check MODEL``, which analyses a model supports (every editing hook is
probed to reach the output, and causal tracing's engine is named)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from mechlin.cli._common import Command, _Run, _say


def _check_model(run: _Run, name: str) -> None:
    """``mechlin models --check PATH``: probe the model and print what it supports."""
    from mechlin.recall._replay import replay_supported  # noqa: PLC0415
    from mechlin.support import check_support  # noqa: PLC0415

    model = run.model(name)
    report = check_support(model)
    engine = "layer replay" if replay_supported(model) else "packed full forwards"
    _say(report.summary() + f"\n  causal tracing runs by {engine}")


def cmd_models(run: _Run) -> None:
    import importlib.metadata  # noqa: PLC0415
    import importlib.util  # noqa: PLC0415

    if run.args.check is not None:
        _check_model(run, run.args.check)
        return

    from mechlin._cache import MANIFEST, cache_root  # noqa: PLC0415
    from mechlin.models import BUNDLED_MODELS  # noqa: PLC0415

    root = cache_root()
    _say(f"cache: {root} (set MECHLIN_CACHE to move it)")
    for spec in BUNDLED_MODELS.values():
        if importlib.util.find_spec(spec.module) is None:
            package = f"not installed: {spec.pip_command}"
        else:
            try:
                package = f"{spec.distribution} {importlib.metadata.version(spec.distribution)}"
            except importlib.metadata.PackageNotFoundError:
                package = f"{spec.distribution} (version unknown)"
        cached = (root / f"{spec.name}-float32" / MANIFEST).is_file()
        state = "cached" if cached else "not cached yet (the first load dequantizes, ~1 min)"
        _say(f"{spec.name:14s} {spec.description}\n{'':14s} {package}; {state}")
    _say(f"{'tiny':14s} random tiny Llama built in-process (tests; also tiny-gemma3)")


COMMANDS: dict[str, Command] = {
    "models": (
        cmd_models,
        "list the bundled models and the cache, or check what a model supports",
        "mechlin models\n  mechlin models --check ./my-gpt2-checkpoint",
    ),
}


def add_arguments(p: Mapping[str, argparse.ArgumentParser]) -> None:
    """The arguments of ``models``."""
    p["models"].add_argument(
        "--check",
        metavar="MODEL",
        help="probe a model (a local folder, a bundled name or tiny) and print which analyses "
        "it supports: every editing hook is checked to reach the output",
    )
