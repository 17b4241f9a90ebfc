"""What the commands of every area share: the exit statuses, the input-file readers
(``read_records`` and the facts, texts and pairs built on it), ``_Run`` (the common options,
status lines, model loading and the report and result every command writes), the report
helpers ``_figure`` and ``_pre``, and the argument types and help texts of several commands.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mechlin.errors import ArgumentError, EmptyInputError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
# Hidden model names for tests and quick tries: random tiny models built in-process.
TINY_MODELS = {"tiny": "llama", "tiny-gemma3": "gemma3"}

FORMATS = """input files (by suffix: .json = a list of objects, .jsonl = one object a line,
.csv = a header row then one row each):
  facts   prompt, subject[, attribute]   e.g. {"prompt": "The Eiffel Tower is in",
                                                "subject": "Eiffel Tower", "attribute": "Paris"}
  texts   text, label                    e.g. {"text": "Bonjour à tous", "label": "fr"}
  pairs   concept, base, target          e.g. {"concept": "male -> female", "base": "king",
                                                "target": "queen"}
  mcq     .jsonl in ARC's layout          {"id": "q1", "question": {"stem": "...", "choices":
            [{"text": "...", "label": "A"}, ...]}, "answerKey": "A"}
models: a bundled name (see `mechlin models`), a local directory saved by save_pretrained, or
`tiny` / `tiny-gemma3` (random in-process test models: fast, meaningless numbers)."""


# ---------------------------------------------------------------- input files


def _say(text: object, *, err: bool = False) -> None:
    """The command line's one output channel: summaries to stdout, status and errors to stderr."""
    stream = sys.stderr if err else sys.stdout
    stream.write(f"{text}\n")
    stream.flush()


def read_records(path: str | Path, fields: Sequence[str], *, optional: Sequence[str] = ()) -> list:
    """Rows of a JSON / JSONL / CSV file as dicts with ``fields`` (and any ``optional`` ones).

    Raises ``ArgumentError`` naming the file and the row for a missing file, a parse error, an
    unknown suffix or a row without a required field.
    """
    path = Path(path)
    if not path.is_file():
        raise ArgumentError(f"file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".json":
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise ArgumentError(f"{path}: a .json file must hold a list of objects")
        elif suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
        else:
            raise ArgumentError(f"{path}: unknown file type {suffix!r}; use .json, .jsonl or .csv")
    except (json.JSONDecodeError, csv.Error) as e:
        raise ArgumentError(f"{path}: not valid {suffix[1:].upper()}: {e}") from None
    if not rows:
        raise EmptyInputError(f"{path} holds no rows")
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ArgumentError(f"{path}: row {i} is not an object with fields {list(fields)}")
        missing = [f for f in fields if not str(row.get(f) or "").strip()]
        if missing:
            raise ArgumentError(f"{path}: row {i} has no {', '.join(missing)} (has {list(row)})")
        out.append({k: str(row[k]) for k in (*fields, *optional) if row.get(k) is not None})
    return out


def read_facts(path: str | Path) -> list[Any]:
    """Facts from a file: ``prompt``, ``subject``, optional ``attribute``."""
    from mechlin.datasets.facts import Fact  # noqa: PLC0415

    rows = read_records(path, ("prompt", "subject"), optional=("attribute",))
    return [Fact(r["prompt"], r["subject"], r.get("attribute", "")) for r in rows]


def read_texts(path: str | Path, *, pooling: str = "mean") -> Any:
    """A labelled ``FeatureDataset`` from a file of ``text`` and ``label`` rows."""
    import torch  # noqa: PLC0415

    from mechlin.datasets import FeatureDataset  # noqa: PLC0415

    rows = read_records(path, ("text", "label"))
    classes = tuple(sorted({r["label"] for r in rows}))
    if len(classes) < 2:
        raise ArgumentError(f"{path}: every text has the label {classes}; need two or more labels")
    return FeatureDataset(
        name=Path(path).stem,
        texts=tuple(r["text"] for r in rows),
        labels=torch.tensor([classes.index(r["label"]) for r in rows], dtype=torch.long),
        classes=classes,
        pooling=pooling,  # type: ignore[arg-type]
        groups=None,
        source=f"user file {path}",
    )


def read_pairs(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """Concept -> word pairs from a file of ``concept``, ``base``, ``target`` rows."""
    out: dict[str, list[tuple[str, str]]] = {}
    for r in read_records(path, ("concept", "base", "target")):
        out.setdefault(r["concept"], []).append((r["base"], r["target"]))
    return out


# ---------------------------------------------------------------- shared plumbing


class _Run:
    """What every command shares: the options, status lines, the model, the output folder."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.progress = not args.quiet
        self.out = Path(args.out or Path("mechlin-out") / args.command)
        self.started = time.time()

    def status(self, message: str) -> None:
        if self.progress:
            _say(f"mechlin {self.args.command}: {message}", err=True)

    def model(self, name: str) -> Any:
        import torch  # noqa: PLC0415

        import mechlin  # noqa: PLC0415

        torch.manual_seed(self.args.seed)
        self.status(f"loading {name}")
        if name in TINY_MODELS:
            model = mechlin.tiny_model(arch=TINY_MODELS[name], seed=self.args.seed)  # type: ignore[arg-type]
            return model.to(self.args.device) if self.args.device else model
        return mechlin.load_model(name, device=self.args.device)

    def finish(self, title: str, result: Any, sections: list[tuple[str, str]]) -> None:
        """Write the report and the result, print the summary and where they are."""
        from mechlin import viz  # noqa: PLC0415

        summary = result.summary()
        report = viz.write_report(
            self.out / "report.html",
            title,
            [("Summary", f"<pre>{html.escape(summary)}</pre>"), *sections],
        )
        saved = result.save(self.out / "result.pt")
        _say(summary)
        _say(f"report: {report}")
        _say(f"result: {saved} (load with mechlin.{type(result).__name__}.load)")
        self.status(f"done in {time.time() - self.started:.1f} s")


def _figure(result: Any) -> str:
    from mechlin import viz  # noqa: PLC0415

    return viz.plot_html(result)


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


# ---------------------------------------------------------------- arguments

# A command: (what runs it, its one-line help, its examples).
Command = tuple[Callable[[_Run], None], str, str]
MODEL_HELP = "bundled name (see `mechlin models`), local directory, or tiny"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value
