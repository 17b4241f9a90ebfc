"""Factual recall on the command line: ``mechlin trace`` (ROME's causal tracing of one fact,
exact or adaptive with ``--budget``) and ``mechlin dissect`` (Geva et al.'s dissection of how
a model recalls facts, from a facts file or the shipped sets), with ``parse_refine``, the type
of trace's ``--refine``."""

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
    read_facts,
)
from mechlin.errors import ArgumentError

_SCREEN_OPTIONS = ("screen", "screen_samples", "screen_stride", "refine", "max_exact")


def cmd_trace(run: _Run) -> None:
    from mechlin.recall import adaptive_trace, causal_trace  # noqa: PLC0415

    a = run.args
    if a.n_samples < 1:
        raise ArgumentError(f"--n-samples must be at least 1, got {a.n_samples}")
    budget: float | int | None = None
    if a.budget is not None:
        budget = float(a.budget) if "." in a.budget else int(a.budget)
    elif any(getattr(a, k) is not None for k in _SCREEN_OPTIONS):
        raise ArgumentError(
            "--screen, --screen-samples, --screen-stride, --refine and --max-exact shape "
            "adaptive tracing: pass --budget too"
        )
    model = run.model(a.model)
    kinds: tuple[Any, ...] = ("resid", "mlp", "attn") if a.kind == "all" else (a.kind,)
    traces = {}
    for kind in kinds:
        how = "adaptive, " if budget is not None else ""
        run.status(f"tracing {kind} ({how}{a.n_samples} noise samples)")
        trace_fn: Any = causal_trace
        extra: dict[str, Any] = {}
        if budget is not None:
            trace_fn = adaptive_trace
            extra = {"budget": budget}
            for key in _SCREEN_OPTIONS:  # else adaptive_trace's defaults
                if getattr(a, key) is not None:
                    extra[key] = getattr(a, key)
        traces[kind] = trace_fn(
            model,
            a.prompt,
            a.subject,
            answer=a.answer,
            kind=kind,
            metric=a.metric,
            n_samples=a.n_samples,
            window=a.window,
            seed=a.seed,
            **extra,
        )
    first = traces[kinds[0]]
    sections = [(f"{kind} states restored", _figure(t)) for kind, t in traces.items()]
    for kind, t in list(traces.items())[1:]:
        t.save(run.out / f"result_{kind}.pt")
        sections.append((f"{kind} summary", _pre(t.summary())))
    run.finish(f"Causal trace: {a.prompt} ({a.model})", first, sections)


def _shipped_facts(n: int) -> list[Any]:
    from mechlin.datasets.countries import country_facts  # noqa: PLC0415
    from mechlin.datasets.facts import load_known_1000  # noqa: PLC0415

    out = []
    for facts in (load_known_1000(), country_facts()):  # spread over the relations
        out += facts[:: max(1, len(facts) // n)][:n]
    return out


def cmd_dissect(run: _Run) -> None:
    from mechlin.recall import dissect_recall  # noqa: PLC0415

    a = run.args
    if a.n_facts < 1:
        raise ArgumentError(f"--n-facts must be at least 1, got {a.n_facts}")
    facts = read_facts(a.facts)[: a.n_facts] if a.facts else _shipped_facts(a.n_facts)
    model = run.model(a.model)
    run.status(f"dissecting recall of {len(facts)} facts")
    result = dissect_recall(model, facts, progress=run.progress)
    report = result.report(run.out / "report.html")
    saved = result.save(run.out / "result.pt")
    _say(result.summary())
    _say(f"report: {report}")
    _say(f"result: {saved} (load with mechlin.RecallDissection.load)")


def parse_refine(text: str) -> tuple[tuple[float, float], ...]:
    """``--refine``: 'none' or stages 'below:above' separated by commas -> adaptive_trace's
    ``refine`` (the shares themselves are checked by adaptive_trace)."""
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(
            (float(b), float(a)) for b, a in (stage.split(":") for stage in text.split(","))
        )
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: pass 'none' or stages below:above separated by commas, "
            "e.g. 0.7:2.0,0.35:0.7"
        ) from None


COMMANDS: dict[str, Command] = {
    "trace": (
        cmd_trace,
        "ROME causal tracing of one fact",
        'mechlin trace smollm2-135m "The Eiffel Tower is located in the city of" "Eiffel Tower"\n'
        '  mechlin trace gemma-3-270m "Big Ben is in" "Big Ben" --kind all --n-samples 4\n'
        '  mechlin trace smollm2-135m "Big Ben is in" "Big Ben" --kind mlp --budget 0.1',
    ),
    "dissect": (
        cmd_dissect,
        "Geva et al.'s dissection of factual recall",
        "mechlin dissect smollm2-135m --n-facts 12\n"
        "  mechlin dissect gemma-3-270m --facts my_facts.jsonl --out out/dissect",
    ),
}


def add_arguments(p: Mapping[str, argparse.ArgumentParser]) -> None:
    """The arguments of ``trace`` and ``dissect``."""
    t = p["trace"]
    t.add_argument("model", help=MODEL_HELP)
    t.add_argument("prompt", help="the factual prompt")
    t.add_argument("subject", help="the subject, as it appears in the prompt")
    t.add_argument("--answer", help="the token to score (default: the model's top prediction)")
    t.add_argument("--kind", choices=("resid", "mlp", "attn", "all"), default="resid")
    t.add_argument("--metric", choices=("prob", "logprob", "logit_diff"), default="prob")
    t.add_argument("--n-samples", type=int, default=10, help="noise samples (ROME: 10)")
    t.add_argument("--window", type=_positive, default=10, help="layers restored together")
    t.add_argument(
        "--budget",
        help="adaptive tracing: estimate every cell by attribution patching, screen the highest "
        "on a few noise samples, and restore exactly only this share (0.1, rounded down to whole "
        "cells) or number (25) of the cells ranked highest",
    )
    t.add_argument(
        "--screen",
        type=float,
        help="with --budget: share of the cells screened on a few noise samples (default 0.3, "
        "0.4 for mlp; on 1 sample for resid and 2 for the windows; 0: rank by the estimate "
        "alone)",
    )
    t.add_argument(
        "--screen-samples",
        type=int,
        help="with --budget: noise samples of the screen (default: 1 for resid, 2 for the windows)",
    )
    t.add_argument(
        "--screen-stride",
        type=int,
        help="with --budget: screen one layer in N, the layers between take their screened "
        "neighbours' mean (default: 3 for mlp, 1 for resid and attn)",
    )
    t.add_argument(
        "--refine",
        type=parse_refine,
        help="with --budget: re-screen the screened cells near the cut on more noise samples, "
        "stage by stage, as below:above shares of the budget's cells separated by commas "
        "(default by kind: 0.5:1.0 for resid and mlp, none for attn; none: rank by the screen "
        "alone, faster)",
    )
    t.add_argument(
        "--max-exact",
        type=int,
        help="with --budget: restore at most this many cells exactly, whatever the prompt's "
        "length (default by kind: 24 for mlp, no cap for resid and attn; 0: no cap)",
    )

    d = p["dissect"]
    d.add_argument("model", help=MODEL_HELP)
    d.add_argument("--facts", type=Path, help="facts file (prompt, subject[, attribute])")
    d.add_argument(
        "--n-facts",
        type=int,
        default=12,
        help="facts taken from the file, or from each shipped set (default: 12)",
    )
