"""The shipped multiple-choice sets and the JSONL loader's validation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mechlin.datasets.mcq import MCQ_SETS, load_mcq
from mechlin.errors import ArgumentError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mcq"
COUNTS = {
    "arc_easy": 570,
    "arc_easy_test": 2376,
    "arc_challenge": 299,
    "openbookqa": 500,
    "commonsenseqa": 1221,
}


@pytest.mark.parametrize("name", sorted(MCQ_SETS))
def test_shipped_sets_load(name: str) -> None:
    ds = load_mcq(name)
    assert len(ds) == COUNTS[name]
    for item in ds:
        assert item.letters == tuple("ABCDE"[: len(item.choices)])
        assert item.original_labels[item.answer] in item.original_labels


@pytest.mark.skipif(
    not SHARED.exists() and not os.environ.get("CI"),
    reason="compares with ../shared/data/mcq: a user's clone lacks it; CI has it (fails if not)",
)
@pytest.mark.parametrize("name", sorted(MCQ_SETS))
def test_shipped_files_equal_the_source(name: str) -> None:
    shipped = Path(__file__).resolve().parents[2] / "mechlin/datasets/data/mcq" / MCQ_SETS[name][0]
    assert shipped.read_bytes() == (SHARED / MCQ_SETS[name][0]).read_bytes()


def test_numeric_labels_become_letters() -> None:
    ds = load_mcq("arc_easy")
    numeric = [it for it in ds if it.original_labels == ("1", "2", "3", "4")]
    assert len(numeric) == 21
    raw = {
        json.loads(line)["id"]: json.loads(line)["answerKey"]
        for line in (
            Path(__file__).resolve().parents[2] / "mechlin/datasets/data/mcq/arc_easy_dev.jsonl"
        )
        .read_text()
        .splitlines()
    }
    for it in numeric:
        assert it.answer == int(raw[it.id]) - 1
        assert it.answer_letter == "ABCD"[int(raw[it.id]) - 1]


def test_the_dev_sets_are_disjoint_from_the_training_pool() -> None:
    train = set(load_mcq("arc_easy_test").ids)
    for name in ("arc_easy", "arc_challenge"):
        assert not train & set(load_mcq(name).ids)


def test_sample_is_seeded() -> None:
    a = load_mcq("openbookqa", n=10, seed=3)
    assert a.ids == load_mcq("openbookqa", n=10, seed=3).ids
    assert a.ids != load_mcq("openbookqa", n=10, seed=4).ids


def _item(**over: object) -> dict:
    rec = {
        "id": "q1",
        "question": {
            "stem": "Why?",
            "choices": [{"text": "a", "label": "A"}, {"text": "b", "label": "B"}],
        },
        "answerKey": "B",
    }
    rec.update(over)
    return rec


def _write(tmp_path: Path, *records: object) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records))
    return path


def test_custom_file_loads(tmp_path: Path) -> None:
    ds = load_mcq(_write(tmp_path, _item(), _item(id="q2", answerKey="A")))
    assert ds.name == "set" and len(ds) == 2 and ds[0].answer == 1


@pytest.mark.parametrize(
    "bad, message",
    [
        (_item(answerKey=None), "line 2: missing 'answerKey'"),
        (_item(answerKey="C"), "line 2: answerKey 'C' is not one of"),
        (
            _item(
                question={
                    "stem": "x",
                    "choices": [{"text": "a", "label": "A"}, {"text": "b", "label": "A"}],
                }
            ),
            "line 2: duplicate choice labels",
        ),
        (
            _item(question={"stem": "x", "choices": [{"text": "a", "label": "A"}]}),
            "line 2: .*1 choice",
        ),
        ("{not json", "line 2: not valid JSON"),
        (_item(id="q0"), "line 2: id 'q0' already used on line 1"),
    ],
)
def test_bad_lines_name_the_line(tmp_path: Path, bad: object, message: str) -> None:
    path = _write(tmp_path, _item(id="q0"), bad)
    with pytest.raises(ArgumentError, match=message):
        load_mcq(path)


def test_unknown_and_unavailable_names() -> None:
    with pytest.raises(ArgumentError, match="RACE is not shipped"):
        load_mcq("race")
    with pytest.raises(ArgumentError, match="neither a shipped"):
        load_mcq("arc_hard")
