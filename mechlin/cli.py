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
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mechlin.errors import ArgumentError, EmptyInputError, MechlinError, NotInResultError

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


# ---------------------------------------------------------------- commands


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


# ---------------------------------------------------------------- the parser

COMMANDS: dict[str, tuple[Callable[[_Run], None], str, str]] = {
    "models": (
        cmd_models,
        "list the bundled models and the cache, or check what a model supports",
        "mechlin models\n  mechlin models --check ./my-gpt2-checkpoint",
    ),
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
    "neurons": (
        cmd_neurons,
        "sparse probing: which neurons carry a feature, with verdicts",
        "mechlin neurons smollm2-135m --features language --n-per-class 20 --layers 3 9 15\n"
        "  mechlin neurons smollm2-135m --texts labelled.csv --pooling mean",
    ),
    "concepts": (
        cmd_concepts,
        "linear concept directions: orthogonality and linearity tests",
        'mechlin concepts smollm2-135m --concepts "male -> female" "English -> French" '
        '"noun -> plural"\n  mechlin concepts gemma-3-270m --pairs pairs.json',
    ),
    "superposition": (
        cmd_superposition,
        "toy models of superposition: phase diagram and capacity",
        "mechlin superposition --grid 5 --steps 800 --lr 1e-2 --seeds 1",
    ),
    "origins": (
        cmd_origins,
        "origins of linear representations (latent-concept model)",
        "mechlin origins --steps 600\n"
        '  mechlin origins --steps 600 --model smollm2-135m --concepts "male -> female" '
        '"lower -> upper"',
    ),
    "cognition": (
        cmd_cognition,
        "cognition (hidden-state probe) vs expression (answers) on multiple-choice sets",
        "mechlin cognition smollm2-135m --n-items 24\n"
        "  mechlin cognition smollm2-135m gemma-3-270m --datasets arc_easy openbookqa "
        "--shots 0 2 --pass-k 1 4\n"
        "  mechlin cognition smollm2-135m --mcq my_questions.jsonl --n-items 60",
    ),
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


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
    model_help = "bundled name (see `mechlin models`), local directory, or tiny"
    p["models"].add_argument(
        "--check",
        metavar="MODEL",
        help="probe a model (a local folder, a bundled name or tiny) and print which analyses "
        "it supports: every editing hook is checked to reach the output",
    )

    t = p["trace"]
    t.add_argument("model", help=model_help)
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
    d.add_argument("model", help=model_help)
    d.add_argument("--facts", type=Path, help="facts file (prompt, subject[, attribute])")
    d.add_argument(
        "--n-facts",
        type=int,
        default=12,
        help="facts taken from the file, or from each shipped set (default: 12)",
    )

    n = p["neurons"]
    n.add_argument("model", help=model_help)
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

    c = p["concepts"]
    c.add_argument("model", help=model_help)
    c.add_argument("--concepts", nargs="+", help="shipped concept names (default: all)")
    c.add_argument("--pairs", type=Path, help="concept pairs file (concept, base, target)")
    c.add_argument("--n-random", type=_positive, default=10_000, help="random pairs (Park: 1e5)")

    s = p["superposition"]
    s.add_argument("--grid", type=_positive, default=10, help="phase diagram: values per axis")
    s.add_argument("--steps", type=_positive, default=5000, help="training steps per toy model")
    s.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    s.add_argument("--seeds", type=_positive, default=2, help="seeds per setting")

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
    g = p["cognition"]
    g.add_argument("models", nargs="+", metavar="model", help=model_help + " (several: correlated)")
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


if __name__ == "__main__":
    sys.exit(main())
