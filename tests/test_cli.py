"""The ``mechlin`` command: every subcommand on a tiny model, the error paths with their exit
codes, and two commands on SmolLM2-135M. Most run ``mechlin.cli.main`` in this process (a
second Python would spend ~6 s importing torch and transformers per command); ``python -m
mechlin``, the installed script and an unexpected failure run in a subprocess."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mechlin
from mechlin.cli import (
    COMMANDS,
    build_parser,
    main,
    read_facts,
    read_pairs,
    read_records,
    read_texts,
)
from mechlin.recall.adaptive_policy import SCREEN_DEFAULTS

FACTS = [
    {"prompt": "The capital of Italy is", "subject": "Italy"},
    {"prompt": "The Eiffel Tower is located in the city of", "subject": "Eiffel Tower"},
    {"prompt": "Big Ben is in", "subject": "Big Ben"},
]
# Word pairs whose words are single tokens of the tiny models' vocabulary (meaningless concepts).
PAIRS = [
    ("a", "Paris", "Rome"),
    ("a", "the", "The"),
    ("a", "is", "of"),
    ("b", "city", "capital"),
    ("b", "in", "located"),
    ("b", "Paris", "the"),
]


def mechlin_cmd(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``mechlin ARGS`` in this process, in ``cwd``: its exit status and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    here = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as done:  # argparse: --help, bad arguments
                code = done.code if isinstance(done.code, int) else int(done.code is not None)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def mechlin_process(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m mechlin ARGS`` in a subprocess."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, "-m", "mechlin", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def pairs_rows() -> list[dict[str, str]]:
    return [{"concept": c, "base": b, "target": t} for c, b, t in PAIRS]


def assert_wrote_report(out: Path, result_class: type) -> object:
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>" in page and "data:image/png;base64," in page
    assert "unpkg.com" not in page and "cdn.jsdelivr" not in page
    return result_class.load(out / "result.pt")


# ---------------------------------------------------------------- help and arguments


def test_help_lists_every_command_and_each_has_examples(capsys: pytest.CaptureFixture) -> None:
    top = mechlin_cmd("--help", cwd=Path.cwd())
    assert top.returncode == 0
    for name in COMMANDS:
        assert name in top.stdout
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            parser.parse_args([name, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"mechlin {name}" in text
        for option in ("--out", "--device", "--seed", "--quiet"):
            assert option in text, (name, option)


def test_bad_arguments_exit_2_with_usage(tmp_path: Path) -> None:
    # In a subprocess: ``python -m mechlin`` passes main's status to the shell.
    args = ("trace", "tiny", "Big Ben is in", "Big Ben", "--kind", "nope")
    done = mechlin_process(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr and "Traceback" not in done.stderr
    assert "usage: mechlin trace" in done.stderr
    done = mechlin_cmd("frobnicate", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    subject = mechlin_process("trace", "tiny", "Big Ben is in", "Eiffel", "--quiet", cwd=tmp_path)
    assert subject.returncode == 2 and "does not occur" in subject.stderr


# ---------------------------------------------------------------- every command on tiny models


def test_models_lists_bundled_models_and_the_cache(tmp_path: Path) -> None:
    done = mechlin_cmd("models", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "cache:" in done.stdout
    for name in mechlin.BUNDLED_MODELS:
        assert name in done.stdout
    assert "tiny" in done.stdout


def test_models_check_probes_a_users_folder(tmp_path: Path) -> None:
    """A GPT-J folder: its bridge fires hook_attn_scores after the softmax, so knockout goes
    through the attention mask, and the report says so."""
    from tests.architectures import build_hf

    tok = mechlin.tiny.tiny_tokenizer()
    folder = tmp_path / "gptj"
    build_hf("gptj", len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    done = mechlin_cmd("models", "--check", folder, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "GPTJForCausalLM: 11 of 11 analyses" in done.stdout
    assert "knockout via mask" in done.stdout
    missing = mechlin_cmd("models", "--check", tmp_path / "nowhere", cwd=tmp_path)
    assert missing.returncode == 2


def test_trace_writes_report_and_results_for_every_kind(tmp_path: Path) -> None:
    out = tmp_path / "trace"
    prompt, subject = FACTS[1]["prompt"], FACTS[1]["subject"]
    done = mechlin_cmd(
        "trace", "tiny", prompt, subject, "--kind", "all", "--n-samples", "2", "--out", out,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "causal trace" in done.stdout and "report:" in done.stdout
    assert "tracing mlp" in done.stderr  # progress / status lines go to stderr
    trace = assert_wrote_report(out, mechlin.CausalTrace)
    assert isinstance(trace, mechlin.CausalTrace) and trace.kind == "resid"
    assert trace.n_samples == 2 and trace.tokens[trace.subject_span[0]].strip() == "Eif"
    for kind in ("mlp", "attn"):
        assert mechlin.CausalTrace.load(out / f"result_{kind}.pt").kind == kind
    # the same command in-process gives the same scores (seeded)
    again = mechlin.causal_trace(mechlin.tiny_model(seed=0), prompt, subject, n_samples=2)
    assert torch.allclose(again.scores, trace.scores)


def test_trace_with_a_budget_is_adaptive(tmp_path: Path) -> None:
    out = tmp_path / "adaptive"
    done = mechlin_cmd(
        "trace", "tiny", "Big Ben is in", "Big Ben", "--n-samples", "2", "--budget", "0.3",
        "--out", out, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    trace = mechlin.AdaptiveTrace.load(out / "result.pt")
    assert 0 < trace.n_exact <= trace.budget == math.floor(0.3 * trace.scores.numel())
    assert "restored exactly" in done.stdout
    bad = mechlin_cmd("trace", "tiny", "Big Ben is in", "Big Ben", "--budget", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "budget=0" in bad.stderr
    screened = mechlin_cmd(
        "trace", "tiny", "Big Ben is in", "Big Ben", "--n-samples", "4", "--budget", "0.3",
        "--screen", "0.5", "--max-exact", "3", "--out", tmp_path / "screened", cwd=tmp_path,
    )  # fmt: skip
    assert screened.returncode == 0, screened.stderr
    trace = mechlin.AdaptiveTrace.load(tmp_path / "screened" / "result.pt")
    assert trace.screen_samples == 1 and trace.n_screened > 0  # resid's default: 1 sample
    assert trace.refine == SCREEN_DEFAULTS["resid"].refine and int(trace.samples.max()) == 4
    assert trace.budget == 3 < math.floor(0.3 * trace.scores.numel())  # --max-exact caps it


@pytest.mark.parametrize(
    "flag",
    [
        ("--screen", "0.5"),
        ("--screen-samples", "2"),
        ("--screen-stride", "2"),
        ("--refine", "none"),
        ("--max-exact", "5"),
    ],
)
def test_adaptive_options_need_a_budget(tmp_path: Path, flag: tuple[str, str]) -> None:
    done = mechlin_cmd("trace", "tiny", "Big Ben is in", "Big Ben", *flag, cwd=tmp_path)
    assert done.returncode == 2 and "pass --budget too" in done.stderr


def test_trace_refine_rescreens_near_the_cut(tmp_path: Path) -> None:
    args = ("trace", "tiny", "Big Ben is in", "Big Ben", "--n-samples", "8", "--budget", "0.2",
            "--screen-samples", "2")  # fmt: skip
    refined = mechlin_cmd(*args, "--refine", "1:2,0.5:1", "--out", tmp_path / "r", cwd=tmp_path)
    assert refined.returncode == 0, refined.stderr
    trace = mechlin.AdaptiveTrace.load(tmp_path / "r" / "result.pt")
    assert trace.refine == ((1.0, 2.0), (0.5, 1.0))
    assert trace.screen_samples == 2
    # some screened cell was re-screened on 4 (stage 1) or 6 (stage 2) noise samples
    assert {4, 6} & set(trace.samples.unique().tolist())
    plain = mechlin_cmd(
        *args, "--refine", "none", "--screen", "1.0", "--screen-stride", "2",
        "--out", tmp_path / "n", cwd=tmp_path,
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    trace = mechlin.AdaptiveTrace.load(tmp_path / "n" / "result.pt")
    assert trace.refine == () and set(trace.samples.unique().tolist()) <= {0, 2, 8}
    # every reachable cell is screened, so the skipped layers' cells are inferred
    assert trace.screen_stride == 2 and trace.n_inferred > 0  # saved and loaded
    bad = mechlin_cmd(*args, "--refine", "0.7-2", cwd=tmp_path)
    assert bad.returncode == 2 and "below:above" in bad.stderr
    negative = mechlin_cmd(*args, "--refine=-1:2", cwd=tmp_path)
    assert negative.returncode == 2 and ">= 0" in negative.stderr
    alone = mechlin_cmd(*args[:4], "--refine", "1:2", cwd=tmp_path)
    assert alone.returncode == 2 and "--budget" in alone.stderr


def test_quiet_prints_only_the_summary(tmp_path: Path) -> None:
    done = mechlin_cmd(
        "trace", "tiny", "Big Ben is in", "Big Ben", "--n-samples", "1", "--quiet",
        "--out", tmp_path / "q", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "mechlin trace:" not in done.stderr and "it/s" not in done.stderr
    assert "report:" in done.stdout


def test_dissect_reads_facts_from_jsonl(tmp_path: Path) -> None:
    facts = write_jsonl(tmp_path / "facts.jsonl", FACTS)
    out = tmp_path / "dissect"
    done = mechlin_cmd("dissect", "tiny", "--facts", facts, "--out", out, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = assert_wrote_report(out, mechlin.RecallDissection)
    assert isinstance(result, mechlin.RecallDissection)
    assert (result.n_facts, result.n_known) == (3, 3)
    assert "3 of 3 facts known" in done.stdout


def test_neurons_reads_labelled_texts_from_csv(tmp_path: Path) -> None:
    rows = []
    for i in range(12):
        rows.append(
            {"text": "The capital of France is Paris" + " and Rome" * (i % 3), "label": "x"}
        )
        rows.append({"text": "Miles Davis plays the trumpet" + " well" * (i % 3), "label": "y"})
    texts = write_csv(tmp_path / "cities.csv", rows)
    out = tmp_path / "neurons"
    done = mechlin_cmd("neurons", "tiny", "--texts", texts, "--out", out, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = assert_wrote_report(out, mechlin.NeuronReport)
    assert isinstance(report, mechlin.NeuronReport) and report.features == ("cities",)
    assert report.layers == (0, 1, 2)
    assert "CircuitsVis.render" in (out / "report.html").read_text(encoding="utf-8")


def test_concepts_reads_pairs_from_json(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps(pairs_rows()), encoding="utf-8")
    out = tmp_path / "concepts"
    done = mechlin_cmd(
        "concepts", "tiny", "--pairs", pairs, "--n-random", "200", "--out", out, "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    dirs = assert_wrote_report(out, mechlin.ConceptDirections)
    assert isinstance(dirs, mechlin.ConceptDirections) and dirs.names == ("a", "b")
    assert "mean |off-diagonal|" in done.stdout
    assert mechlin.LinearityTest.load(out / "linearity.pt").names == ("a", "b")


def test_superposition_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "sup"
    done = mechlin_cmd(
        "superposition", "--grid", "2", "--steps", "20", "--seeds", "1", "--out", out, "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sweep = assert_wrote_report(out, mechlin.SuperpositionSweep)
    assert isinstance(sweep, mechlin.SuperpositionSweep)
    assert "PhaseDiagram" in done.stdout


def test_origins_with_the_alignment_on_a_tiny_model(tmp_path: Path) -> None:
    pairs = write_csv(tmp_path / "pairs.csv", pairs_rows())
    out = tmp_path / "origins"
    done = mechlin_cmd(
        "origins", "--steps", "30", "--n-concepts", "4", "--model", "tiny", "--pairs", pairs,
        "--max-pairs", "3", "--out", out, "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run = assert_wrote_report(out, mechlin.OriginsRun)
    assert isinstance(run, mechlin.OriginsRun)
    align = mechlin.EmbeddingUnembeddingAlignment.load(out / "alignment.pt")
    assert "matched cosine" in align.summary()


def short_mcq(path: Path, n: int = 12) -> Path:
    """ARC-Easy dev items short enough for the tiny models' 256-token context, as a JSONL file."""
    lines = (Path(mechlin.__file__).parent / "datasets/data/mcq/arc_easy_dev.jsonl").read_text(
        encoding="utf-8"
    )
    rows = [json.loads(line) for line in lines.splitlines() if line.strip()]
    rows.sort(key=lambda r: len(json.dumps(r["question"])))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:n]), "utf-8")
    return path


def test_cognition_on_two_tiny_models(tmp_path: Path) -> None:
    mcq = short_mcq(tmp_path / "short.jsonl")
    out = tmp_path / "cognition"
    done = mechlin_cmd(
        "cognition", "tiny", "tiny-gemma3", "--mcq", mcq, "--n-items", "12", "--pass-k", "1", "2",
        "--n-samples", "2", "--pca-dim", "4", "--out", out, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Cognition vs expression: 2 model(s) x 1 dataset(s)" in done.stdout
    assert "loading tiny-gemma3" in done.stderr and "report:" in done.stdout
    result = assert_wrote_report(out, mechlin.CognitionExpression)
    assert isinstance(result, mechlin.CognitionExpression)
    assert result.model_names == ("tiny", "tiny-gemma3") and result.datasets == ("short",)
    assert result.pass_k == (1, 2) and len(result.probes[0].test_acc) == 3  # 3 layers
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "The gap: cognition - expression" in page and "Probe: " in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--n-items", "2"), "--n-items must be at least 3"),
        (("--pass-k", "8", "--n-samples", "4"), "--pass-k 8 needs --n-samples >= 8"),
        (("--datasets", "arc_easy", "--n-items", "12"), "more than the model's context"),
        (("--mcq", "missing.jsonl"), "neither a shipped multiple-choice set"),
    ],
)
def test_cognition_bad_input_exits_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = mechlin_cmd("cognition", "tiny", *args, "--quiet", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    done = mechlin_cmd("cognition", "tiny", "tiny", "--quiet", cwd=tmp_path)
    assert done.returncode == 2 and "a model is named twice" in done.stderr


def test_every_area_has_a_command() -> None:
    areas = {
        "recall": {"trace", "dissect"},
        "neurons": {"neurons", "superposition"},
        "directions": {"concepts"},
        "origins": {"origins"},
        "cognition": {"cognition"},
    }
    for area, commands in areas.items():
        assert commands <= set(COMMANDS), (area, commands - set(COMMANDS))


# ---------------------------------------------------------------- error paths


def test_unknown_model_exits_2_with_the_message_and_no_traceback(tmp_path: Path) -> None:
    done = mechlin_cmd("trace", "no-such-model-xyz", "a b", "a", cwd=tmp_path)
    assert done.returncode == 2
    assert "error: Cannot load model 'no-such-model-xyz'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "mechlin-out").exists()


def test_subject_not_in_prompt_exits_2(tmp_path: Path) -> None:
    done = mechlin_cmd("trace", "tiny", "Big Ben is in", "Eiffel Tower", "--quiet", cwd=tmp_path)
    assert done.returncode == 2
    assert "error: subject 'Eiffel Tower' does not occur" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "does not exist"),
        ("broken.json", '[{"prompt": "a"', "not valid JSON"),
        ("nofield.jsonl", '{"prompt": "Big Ben is in"}\n', "row 1 has no subject"),
        ("facts.txt", "Big Ben is in", "unknown file type '.txt'"),
        ("empty.csv", "prompt,subject\n", "holds no rows"),
        ("wrong.jsonl", '{"prompt": "Big Ben is in", "subject": "Rome"}\n', "not in prompt"),
    ],
)
def test_bad_facts_file_exits_2(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    done = mechlin_cmd("dissect", "tiny", "--facts", path, "--quiet", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unexpected_failure_exits_1_with_the_traceback(tmp_path: Path) -> None:
    code = (
        "import sys, mechlin.cli as c\n"
        "def boom(run): raise RuntimeError('kaboom')\n"
        "c.COMMANDS['models'] = (boom, '', '')\n"
        "sys.exit(c.main(['models']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "RuntimeError: kaboom" in done.stderr


# ---------------------------------------------------------------- input files


def test_the_three_file_layouts_read_the_same_rows(tmp_path: Path) -> None:
    rows = [dict(f, attribute="Rome" if i == 0 else "") for i, f in enumerate(FACTS)]
    json_path = tmp_path / "f.json"
    json_path.write_text(json.dumps(rows), encoding="utf-8")
    paths = [
        json_path,
        write_jsonl(tmp_path / "f.jsonl", rows),
        write_csv(tmp_path / "f.csv", rows),
    ]
    read = [read_facts(p) for p in paths]
    assert read[0] == read[1] == read[2]
    assert [f.subject for f in read[0]] == ["Italy", "Eiffel Tower", "Big Ben"]
    assert read[0][0].attribute == "Rome" and read[0][1].attribute == ""
    assert read_pairs(write_csv(tmp_path / "p.csv", pairs_rows()))["b"][0] == ("city", "capital")
    texts = write_jsonl(
        tmp_path / "t.jsonl", [{"text": "a b", "label": "y"}, {"text": "c", "label": "x"}]
    )
    ds = read_texts(texts)
    assert ds.classes == ("x", "y") and ds.labels.tolist() == [1, 0]
    with pytest.raises(mechlin.ArgumentError, match="two or more labels"):
        read_texts(write_jsonl(tmp_path / "one.jsonl", [{"text": "a", "label": "y"}]))
    with pytest.raises(mechlin.ArgumentError, match="row 2 is not an object"):
        bad = tmp_path / "bad.json"
        bad.write_text('[{"prompt": "a", "subject": "a"}, 3]', encoding="utf-8")
        read_records(bad, ("prompt", "subject"))


# ---------------------------------------------------------------- a bundled model


@pytest.mark.bundled
def test_trace_on_smollm2_finds_paris(tmp_path: Path) -> None:
    out = tmp_path / "smol"
    done = mechlin_cmd(
        "trace", "smollm2-135m", "The Eiffel Tower is located in the city of", "Eiffel Tower",
        "--n-samples", "2", "--device", "cpu", "--out", out, "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    trace = mechlin.CausalTrace.load(out / "result.pt")
    assert trace.answer == " Paris" and trace.clean_score > 0.3
    assert trace.scores.shape[0] == 30


def test_installed_script_runs_models(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("mechlin")
    if not script.exists() and not os.environ.get("CI"):
        pytest.skip(f"no installed `mechlin` script beside {sys.executable} (pip install -e .)")
    done = subprocess.run([str(script), "models"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "smollm2-135m" in done.stdout
