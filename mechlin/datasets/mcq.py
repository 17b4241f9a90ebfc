"""Multiple-choice questions: ARC-Easy, ARC-Challenge, OpenBookQA and CommonsenseQA, shipped.

``load_mcq(name_or_path)`` reads a shipped set by name (``MCQ_SETS``) or any JSONL file in ARC's
layout, one question a line::

    {"id": "...", "question": {"stem": "...", "choices": [{"text": "...", "label": "A"}, ...]},
     "answerKey": "A"}

Every line is validated (valid JSON, an id, a stem, at least two choices with non-empty text,
distinct labels, an ``answerKey`` among the labels); a bad line raises ``ArgumentError`` naming
the file and the line number.

Labels. About 4% of ARC items label their choices ``"1".."4"`` instead of ``"A".."D"``.
mechlin normalises every item to *positional letters*: the i-th choice is always letter
``"ABCDE..."[i]`` (this is what a letter prompt shows and what a letter probe predicts), the
answer is stored as the index of the choice whose original label equals ``answerKey``, and the
file's own labels are kept in ``MCQItem.original_labels``.

RACE (used by Yan et al. 2024) is not shipped: no offline copy is available here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from mechlin._checks import checked
from mechlin.errors import ArgumentError, EmptyInputError, OutOfRangeError

LETTERS = "ABCDEFGHIJ"

# name -> (file in data/mcq, what it is)
MCQ_SETS: dict[str, tuple[str, str]] = {
    "arc_easy": ("arc_easy_dev.jsonl", "ARC-Easy dev, 570 questions (CC BY-SA 4.0, AI2)"),
    "arc_easy_test": (
        "arc_easy_test.jsonl",
        "ARC-Easy test, 2,376 questions (CC BY-SA 4.0, AI2); mechlin's fine-tuning pool",
    ),
    "arc_challenge": (
        "arc_challenge_dev.jsonl",
        "ARC-Challenge dev, 299 questions (CC BY-SA 4.0, AI2)",
    ),
    "openbookqa": ("openbookqa_test.jsonl", "OpenBookQA main test, 500 questions (Apache-2.0)"),
    "commonsenseqa": (
        "commonsenseqa_dev.jsonl",
        "CommonsenseQA v1.11 dev, 1,221 questions, 5 choices (MIT, Talmor et al. 2019)",
    ),
}
_UNAVAILABLE = {"race": "RACE is not shipped with mechlin (no offline copy was available)"}


@dataclass(frozen=True)
class MCQItem:
    """One multiple-choice question; choice ``i`` has the positional letter ``LETTERS[i]``."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: int  # index of the correct choice
    original_labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ArgumentError(f"item {self.id!r} has {len(self.choices)} choice(s); need >= 2")
        if len(self.choices) > len(LETTERS):
            raise ArgumentError(f"item {self.id!r} has more than {len(LETTERS)} choices")
        if not 0 <= self.answer < len(self.choices):
            raise OutOfRangeError(f"item {self.id!r}: answer {self.answer} is not a choice index")
        if len(self.original_labels) != len(self.choices):
            raise ArgumentError(f"item {self.id!r}: one original label per choice is needed")

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(LETTERS[: len(self.choices)])

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]


@dataclass(frozen=True)
class MCQDataset:
    """A named, ordered set of multiple-choice items (``len``, indexing, ``sample``)."""

    name: str
    items: tuple[MCQItem, ...]

    def __post_init__(self) -> None:
        ids = [it.id for it in self.items]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ArgumentError(f"dataset {self.name!r} holds item id {dup!r} twice")

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[MCQItem]:
        return iter(self.items)

    def __getitem__(self, i: int) -> MCQItem:
        return self.items[i]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(it.id for it in self.items)

    def subset(self, indices: Sequence[int], *, name: str | None = None) -> MCQDataset:
        """The items at ``indices``, in that order."""
        return MCQDataset(name or self.name, tuple(self.items[i] for i in indices))

    def sample(self, n: int, *, seed: int = 0) -> MCQDataset:
        """``n`` items drawn without replacement (seeded), kept in file order."""
        if not 1 <= n <= len(self):
            raise OutOfRangeError(f"n={n}: dataset {self.name!r} has {len(self)} items")
        if n == len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        return self.subset([int(i) for i in idx])


def _bad(where: str, what: str) -> ArgumentError:
    return ArgumentError(f"{where}: {what}")


def _parse_line(record: object, where: str) -> MCQItem:
    if not isinstance(record, dict):
        raise _bad(where, "each line must be a JSON object")
    q = record.get("question")
    if not isinstance(q, dict) or not isinstance(q.get("stem"), str) or not q["stem"].strip():
        raise _bad(where, "'question' must be an object with a non-empty 'stem'")
    choices = q.get("choices")
    if not isinstance(choices, list) or len(choices) < 2:
        n = len(choices) if isinstance(choices, list) else 0
        raise _bad(where, f"'question.choices' has {n} choice(s); at least 2 are needed")
    labels, texts = [], []
    for c in choices:
        if not isinstance(c, dict) or not isinstance(c.get("text"), str) or not c["text"].strip():
            raise _bad(where, f"choice {c!r} needs a non-empty 'text'")
        labels.append(str(c.get("label", "")))
        texts.append(c["text"].strip())
    if len(set(labels)) != len(labels):
        raise _bad(where, f"duplicate choice labels {labels}")
    if "answerKey" not in record or record["answerKey"] in (None, ""):
        raise _bad(where, "missing 'answerKey'")
    key = str(record["answerKey"])
    if key not in labels:
        raise _bad(where, f"answerKey {key!r} is not one of the labels {labels}")
    item_id = record.get("id")
    if item_id in (None, ""):
        raise _bad(where, "missing 'id'")
    return MCQItem(
        id=str(item_id),
        question=q["stem"].strip(),
        choices=tuple(texts),
        answer=labels.index(key),
        original_labels=tuple(labels),
    )


def parse_mcq_lines(lines: Sequence[str], *, source: str = "<lines>") -> tuple[MCQItem, ...]:
    """Parse and validate JSONL lines (blank lines skipped); errors name ``source:line``."""
    items = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad(where, f"not valid JSON ({e.msg})") from None
        item = _parse_line(record, where)
        if item.id in seen:
            raise _bad(where, f"id {item.id!r} already used on line {seen[item.id]}")
        seen[item.id] = number
        items.append(item)
    return tuple(items)


@checked
def load_mcq(
    name_or_path: str | os.PathLike[str], *, n: int | None = None, seed: int = 0
) -> MCQDataset:
    """A shipped multiple-choice set by name (``MCQ_SETS``), or a JSONL file in ARC's layout.

    ``n`` keeps a seeded sample of ``n`` items (in file order). Labels are normalised to
    positional letters (see the module docstring).

    >>> ds = load_mcq("arc_easy")
    >>> len(ds), ds[0].letters, ds[0].answer_letter
    (570, ('A', 'B', 'C', 'D'), 'A')
    """
    key = str(name_or_path)
    if key.lower() in _UNAVAILABLE:
        raise ArgumentError(f"{_UNAVAILABLE[key.lower()]}; shipped sets: {sorted(MCQ_SETS)}")
    if key in MCQ_SETS:
        text = files("mechlin.datasets").joinpath(f"data/mcq/{MCQ_SETS[key][0]}").read_text("utf-8")
        name = key
        source = f"mechlin/datasets/data/mcq/{MCQ_SETS[key][0]}"
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ArgumentError(
                f"{key!r} is neither a shipped multiple-choice set ({sorted(MCQ_SETS)}) nor a "
                "JSONL file"
            )
        text, name, source = path.read_text("utf-8"), path.stem, str(path)
    items = parse_mcq_lines(text.splitlines(), source=source)
    if not items:
        raise EmptyInputError(f"{source} holds no questions")
    dataset = MCQDataset(name, items)
    return dataset if n is None else dataset.sample(n, seed=seed)
