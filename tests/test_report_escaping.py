"""Markup in user text never reaches a report as markup: every kind of HTML page mechlin writes.

Each report is built on the tiny models with hostile text in every string a user controls
(prompts, subjects, attribute words, feature / class / concept / dataset / model names, questions,
extra section headings, titles). The raw markup must not appear in the page; its escaped form
must (so the text did reach the page, shown as text). Inside circuitsvis views the text sits in
a JSON ``<script>`` block, where it must be written with ``\\u003c`` (a ``</script>`` in a token
would otherwise end the script and run the rest as page markup).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import mechlin
from mechlin import viz
from mechlin.cli import main as cli_main
from mechlin.datasets.features import FeatureDataset
from mechlin.datasets.mcq import MCQDataset, load_mcq

IMG = '<img src=x onerror="alert(1)">'
SCRIPT = "<script>alert(2)</script>"
EVIL = f"{IMG}{SCRIPT}"
RAW = ("<img src=x", "<script>alert(2)")  # what must never appear
HTML_TEXT = ("&lt;img src=x",)  # the text shown as HTML text
JSON_DATA = ("\\u003c",)  # the text (split into tokens) inside a circuitsvis view's JSON


def assert_escaped(page: str, where: str, *, shown: tuple[str, ...] = HTML_TEXT) -> None:
    """No raw markup; and where the page shows the text, its escaped form is there."""
    for raw in RAW:
        assert raw not in page, f"{where}: raw markup {raw!r} in the page"
    for escaped in shown:
        assert escaped in page, f"{where}: the hostile text is not on the page as {escaped!r}"


def _read(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("escaping")


# ---------------------------------------------------------------- library reports


def test_dissection_report(tiny: object, out: Path) -> None:
    prompt = f"{EVIL} Eiffel Tower is located in the city of"
    facts = [(prompt, "Eiffel Tower"), (f"{EVIL} is in", EVIL)]
    result = mechlin.dissect_recall(
        tiny,
        facts,
        attributes={"Eiffel Tower": [EVIL, "Paris"], EVIL: [SCRIPT]},
        enrichment_window=2,
        progress=False,
    )
    result = dataclasses.replace(result, model_name=EVIL)
    page = _read(result.report(out / "dissection.html"))
    assert_escaped(page, "RecallDissection.report", shown=HTML_TEXT + JSON_DATA)


def _hostile_datasets() -> dict[str, FeatureDataset]:
    pos = [f"the {w} cat {EVIL} sat" for w in ("big", "old", "red", "sad")] * 3
    neg = [f"the {w} dog ran {SCRIPT}" for w in ("big", "old", "red", "sad")] * 3
    binary = FeatureDataset(
        name=EVIL,
        texts=tuple(pos + neg),
        labels=torch.tensor([1] * 12 + [0] * 12),
        classes=(SCRIPT, IMG),
        pooling="max",
        groups=None,
        source=EVIL,
    )
    three = FeatureDataset(
        name=f"three {IMG}",
        texts=tuple(pos[:8] + neg[:8] + [f"a fish {EVIL} swam"] * 8),
        labels=torch.tensor([0] * 8 + [1] * 8 + [2] * 8),
        classes=(IMG, SCRIPT, "fish"),
        pooling="mean",
        groups=None,
        source="test",
    )
    return {EVIL: binary, f"three {IMG}": three}


def test_neuron_report_and_views(tiny: object, out: Path) -> None:
    from mechlin.neurons.verdicts import neuron_activations_html

    report = mechlin.classify_neurons(
        tiny,
        _hostile_datasets(),
        broad_texts=[f"one {EVIL} two", "a quiet evening by the sea", SCRIPT],
        top=8,
        n_ablation_texts=4,
        progress=False,
    )
    assert any(IMG in f for f in report.features)
    report = dataclasses.replace(report, model_name=EVIL)
    view = neuron_activations_html(tiny, [f"The capital {EVIL} is Rome"], [(0, 1), (1, 2)])
    assert_escaped(view, "neuron_activations_html", shown=JSON_DATA)
    page = _read(report.report(out / "neurons.html", extra=[(EVIL, view)]))
    assert_escaped(page, "NeuronReport.report", shown=HTML_TEXT + JSON_DATA)
    assert_escaped(report._repr_html_(), "NeuronReport._repr_html_")


def test_cognition_report(tiny: object, out: Path) -> None:
    items = []
    for item in load_mcq("arc_easy"):
        if len(item.question) + sum(map(len, item.choices)) < 90:
            items.append(dataclasses.replace(item, question=f"{EVIL} {item.question}"))
    ds = MCQDataset(EVIL, tuple(items[:9]))
    result = mechlin.cognition_vs_expression(
        {EVIL: tiny, f"b {SCRIPT}": tiny}, ds, pass_k=(1,), n_samples=2, pca_dim=4, progress=False
    )
    page = _read(result.report(out / "cognition.html", title=EVIL))
    assert_escaped(page, "CognitionExpression.report")
    assert_escaped(result._repr_html_(), "CognitionExpression._repr_html_")


def test_result_views_and_attention_patterns(tiny: object, out: Path) -> None:
    prompt = f"The {EVIL} Eiffel Tower is in"
    trace = mechlin.causal_trace(tiny, prompt, "Eiffel Tower", n_samples=1)
    assert_escaped(trace._repr_html_(), "CausalTrace._repr_html_", shown=())
    pairs = {EVIL: [(5, 6), (7, 8), (9, 10)], SCRIPT: [(11, 12), (13, 14)]}
    dirs = mechlin.concept_directions(tiny, pairs)
    assert_escaped(dirs._repr_html_(), "ConceptDirections._repr_html_")
    lin = mechlin.linearity_test(tiny, dirs, n_random=50)
    assert_escaped(lin._repr_html_(), "LinearityTest._repr_html_", shown=())
    for name, view in (
        ("attention_pattern_html", viz.attention_pattern_html(tiny, prompt, 1)),
        ("head_patterns_html", viz.head_patterns_html(tiny, prompt, [(0, 1), (2, 3)])),
    ):
        assert_escaped(view, name, shown=JSON_DATA)
    page = viz.write_report(out / "plain.html", EVIL, [(EVIL, "<p>ok</p>")])
    assert_escaped(_read(page), "write_report title and headings")


# ---------------------------------------------------------------- the command's reports


def _cli(out: Path, name: str, *argv: str) -> str:
    assert cli_main([*argv, "--quiet", "--out", str(out / name)]) == 0, name
    return _read(out / name / "report.html")


def test_cli_trace_and_dissect(out: Path) -> None:
    prompt = f"{EVIL} Big Ben is in"
    assert_escaped(
        _cli(out, "trace", "trace", "tiny", prompt, "Big Ben", "--n-samples", "1"), "trace"
    )
    facts = out / "facts.jsonl"
    rows = [{"prompt": prompt, "subject": "Big Ben"}, {"prompt": f"{EVIL} is in", "subject": EVIL}]
    facts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    page = _cli(out, "dissect", "dissect", "tiny", "--facts", str(facts))
    assert_escaped(page, "dissect", shown=JSON_DATA)


def test_cli_neurons_concepts_origins(out: Path) -> None:
    texts = out / "texts.jsonl"
    rows = [{"text": f"the {w} cat {EVIL}", "label": EVIL} for w in ("a", "b", "c", "d")] * 3
    rows += [{"text": f"the {w} dog {SCRIPT}", "label": "dog"} for w in ("a", "b", "c", "d")] * 3
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    page = _cli(out, "neurons", "neurons", "tiny", "--texts", str(texts))
    assert_escaped(page, "neurons", shown=JSON_DATA)
    pairs = out / "pairs.json"
    words = [
        ("Paris", "Rome"),
        ("the", "The"),
        ("is", "of"),
        ("city", "capital"),
        ("in", "located"),
    ]
    concept_rows = [
        {"concept": EVIL if i < 3 else SCRIPT, "base": b, "target": t}
        for i, (b, t) in enumerate(words)
    ]
    pairs.write_text(json.dumps(concept_rows), encoding="utf-8")
    page = _cli(out, "concepts", "concepts", "tiny", "--pairs", str(pairs), "--n-random", "50")
    assert_escaped(page, "concepts")
    page = _cli(
        out, "origins", "origins", "--steps", "10", "--n-concepts", "3", "--model", "tiny",
        "--pairs", str(pairs), "--max-pairs", "3",
    )  # fmt: skip
    assert_escaped(page, "origins", shown=())


def test_cli_cognition(out: Path) -> None:
    rows = []
    for line in (Path(mechlin.__file__).parent / "datasets/data/mcq/arc_easy_dev.jsonl").open():
        row = json.loads(line)
        if len(json.dumps(row["question"])) < 260:
            row["question"]["stem"] = f"{EVIL} {row['question']['stem']}"
            row["question"]["choices"][0]["text"] += SCRIPT
            rows.append(row)
    mcq = out / "hostile mcq.jsonl"
    mcq.write_text("".join(json.dumps(r) + "\n" for r in rows[:9]), encoding="utf-8")
    page = _cli(
        out, "cognition", "cognition", "tiny", "--mcq", str(mcq), "--n-items", "9",
        "--pass-k", "1", "--n-samples", "1", "--pca-dim", "4",
    )  # fmt: skip
    assert_escaped(page, "cognition", shown=())
