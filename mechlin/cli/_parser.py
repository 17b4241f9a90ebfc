"""The ``mechlin`` parser and entry point: ``COMMANDS`` gathered from the area modules in the
order ``mechlin --help`` lists them, one subparser per command with the common options and the
arguments its area adds, and ``main``, which runs the chosen command and turns how it ended
into the exit status (0 ok, 2 a mechlin error in one line, 1 anything else with the traceback).
"""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Sequence
from pathlib import Path

from mechlin.cli import cognition, compression, directions, models, neurons, origins, recall
from mechlin.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    FORMATS,
    Command,
    _Run,
    _say,
)
from mechlin.errors import MechlinError

# Each area module has COMMANDS (name -> Command) and add_arguments (its commands' arguments).
AREAS = (models, recall, neurons, directions, origins, cognition, compression)
# The order of `mechlin --help` and of its examples; a command not named here comes last, in
# the order of AREAS.
HELP_ORDER = (
    "models",
    "trace",
    "dissect",
    "neurons",
    "concepts",
    "superposition",
    "origins",
    "cognition",
    "compress",
    "decompress",
    "bpb",
)


def _gather() -> dict[str, Command]:
    found = {name: spec for area in AREAS for name, spec in area.COMMANDS.items()}
    rank = {name: i for i, name in enumerate(HELP_ORDER)}
    return {name: found[name] for name in sorted(found, key=lambda n: rank.get(n, len(rank)))}


COMMANDS: dict[str, Command] = _gather()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument("--out", type=Path, help="output folder (default: mechlin-out/COMMAND)")
    group.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA if available)")
    group.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    group.add_argument("--quiet", action="store_true", help="no progress bars or status lines")

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="mechlin",
        description="Mechanistic interpretability of language models: each command writes "
        "an HTML report and the saved result under --out and prints a summary.",
        epilog="examples:\n  "
        + "\n  ".join(ex for _, _, ex in COMMANDS.values())
        + "\n\n"
        + FORMATS
        + "\n\nexit status: 0 ok, 2 bad input (one-line error), 1 unexpected failure.",
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = {}
    for name, (_, help_text, example) in COMMANDS.items():
        p[name] = sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=f"examples:\n  {example}\n\n{FORMATS}",
            formatter_class=fmt,
        )
    for area in AREAS:
        area.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (``mechlin`` calls ``sys.exit`` on it)."""
    args = build_parser().parse_args(argv)  # argparse exits 2 on a bad argument
    try:
        COMMANDS[args.command][0](_Run(args))
    except MechlinError as e:
        _say(f"mechlin {args.command}: error: {e}", err=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _say("mechlin: interrupted", err=True)
        return 130
    except Exception:
        traceback.print_exc()
        return EXIT_FAILURE
    return EXIT_OK
