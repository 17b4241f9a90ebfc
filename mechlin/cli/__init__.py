"""The ``mechlin`` command: run an analysis on a model, get an HTML report and the saved result.

Every subcommand loads a model (a bundled name such as ``smollm2-135m``, a local directory, or
``tiny`` / ``tiny-gemma3``: the random in-process test models of ``mechlin.tiny_model``), runs
one analysis, writes ``report.html`` (opens offline) and the result (``result.pt``, read back
with ``<ResultClass>.load``) under ``--out``, and prints a short summary. Exit status: 0 on
success, 2 on bad input (the one-line mechlin error, no traceback), 1 on an unexpected failure
(with the traceback).

Input files (``--facts``, ``--texts``, ``--pairs``) are JSON (a list of objects), JSONL (one
object a line) or CSV (a header row), chosen by the file's suffix:

* facts: ``prompt``, ``subject``, optional ``attribute`` (empty: the model's own answer);
* texts: ``text`` and ``label`` (any strings; two or more distinct labels);
* concept pairs: ``concept``, ``base``, ``target`` (one word pair per row);
* multiple-choice questions (``--mcq``): JSONL in ARC's layout (``mechlin.datasets.mcq``).

The commands live in one module per research area (``mechlin.cli.recall``: ``trace`` and
``dissect``, ...), each with its ``COMMANDS`` and ``add_arguments``; ``mechlin.cli._common``
holds what they share and ``mechlin.cli._parser`` gathers them into one parser.
"""

from __future__ import annotations

from mechlin.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    FORMATS,
    TINY_MODELS,
    read_facts,
    read_pairs,
    read_records,
    read_texts,
)
from mechlin.cli._parser import COMMANDS, build_parser, main
from mechlin.cli.cognition import cmd_cognition
from mechlin.cli.directions import cmd_concepts
from mechlin.cli.models import cmd_models
from mechlin.cli.neurons import cmd_neurons, cmd_superposition
from mechlin.cli.origins import cmd_origins
from mechlin.cli.recall import cmd_dissect, cmd_trace, parse_refine

__all__ = [
    "COMMANDS",
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "FORMATS",
    "TINY_MODELS",
    "build_parser",
    "cmd_cognition",
    "cmd_concepts",
    "cmd_dissect",
    "cmd_models",
    "cmd_neurons",
    "cmd_origins",
    "cmd_superposition",
    "cmd_trace",
    "main",
    "parse_refine",
    "read_facts",
    "read_pairs",
    "read_records",
    "read_texts",
]
