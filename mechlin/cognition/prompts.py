"""Prompt formats for multiple-choice questions: cloze (lm-eval style) and letter, few-shot.

- Cloze (lm-evaluation-harness's ARC/OpenBookQA format): the context is
  ``"Question: {stem}\\nAnswer:"`` and each option is scored as the continuation
  ``" " + text``.
- Letter: the options are listed ``"A. text"`` one a line and the model answers with the letter
  after ``"Answer:"``; the letter is scored as the continuation ``" A"``, ``" B"``, ...
- Few-shot: ``k`` worked examples (the same format with its answer filled in) precede the
  question, separated by a blank line; they are drawn per question from a pool disjoint from the
  evaluated items, seeded (``draw_shots``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mechlin._checks import checked
from mechlin.datasets.mcq import LETTERS, MCQDataset, MCQItem
from mechlin.errors import ArgumentError, OutOfRangeError

SHOT_SEPARATOR = "\n\n"


@checked
def cloze_context(item: MCQItem) -> str:
    """The cloze context: ``"Question: {stem}\\nAnswer:"``."""
    return f"Question: {item.question}\nAnswer:"


@checked
def cloze_options(item: MCQItem) -> tuple[str, ...]:
    """The continuations scored after ``cloze_context``: each option with a leading space."""
    return tuple(" " + c for c in item.choices)


@checked
def letter_prompt(item: MCQItem) -> str:
    """The question, the options as ``"A. text"`` lines, then ``"Answer:"``."""
    lines = [f"Question: {item.question}"]
    lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices)]
    return "\n".join(lines) + "\nAnswer:"


@checked
def letter_options(item: MCQItem) -> tuple[str, ...]:
    """The letter continuations ``" A"``, ``" B"``, ... of ``letter_prompt``."""
    return tuple(" " + x for x in item.letters)


def with_shots(prompt: str, shots: Sequence[MCQItem], *, style: str) -> str:
    """``prompt`` preceded by the worked examples ``shots`` in the same ``style``."""
    if style == "cloze":
        solved = [cloze_context(s) + cloze_options(s)[s.answer] for s in shots]
    elif style == "letter":
        solved = [letter_prompt(s) + letter_options(s)[s.answer] for s in shots]
    else:
        raise ArgumentError(f"style must be 'cloze' or 'letter', not {style!r}")
    return SHOT_SEPARATOR.join([*solved, prompt])


def draw_shots(
    dataset: MCQDataset, pool: MCQDataset | None, k: int, *, seed: int = 0
) -> list[list[MCQItem]]:
    """For each item of ``dataset``, ``k`` distinct examples of ``pool`` (seeded).

    The pool must share no item id with ``dataset`` (a worked example of the very question
    would leak its answer).
    """
    if k < 0:
        raise OutOfRangeError(f"shots must be >= 0, got {k}")
    if k == 0:
        return [[] for _ in dataset]
    if pool is None:
        raise ArgumentError(
            f"shots={k} needs shot_pool=, a dataset disjoint from the evaluated one"
        )
    if k > len(pool):
        raise OutOfRangeError(
            f"shots={k} is larger than the shot pool {pool.name!r} of {len(pool)} items"
        )
    shared = set(pool.ids) & set(dataset.ids)
    if shared:
        raise ArgumentError(
            f"the shot pool {pool.name!r} shares {len(shared)} item(s) with the evaluated "
            f"dataset {dataset.name!r} (e.g. {sorted(shared)[0]!r}): use a disjoint split"
        )
    rng = np.random.default_rng(seed)
    return [[pool[int(j)] for j in rng.choice(len(pool), k, replace=False)] for _ in dataset]
