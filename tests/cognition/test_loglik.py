"""The prefix-tree engine under expression scoring against the plain padded one.

``padded_rows`` runs every request whole (right-padded batches; tested against a plain Hugging
Face loop in ``test_expression.py``); ``tree_rows`` runs each distinct prefix once against the
key-value cache of its ancestors. They must yield the same log-softmax rows up to float32
rounding, on every architecture family, with sliding windows shorter than the shared prefixes,
requests that end inside other requests, and reads at shared positions.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from tqdm.auto import tqdm

import mechlin
from mechlin.cognition import _loglik
from tests.architectures import ARCHITECTURES
from tests.cognition.test_expression import _short
from tests.test_architectures import _models

EPS = torch.finfo(torch.float32).eps
TOL = dict(rtol=64 * EPS, atol=1e-5)  # float32 log-probs, other matmul shapes and orders


def _requests(vocab: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Requests shaped like an MCQ chunk: shared stems, branching options, nested prefixes."""
    rng = np.random.default_rng(seed)
    inputs: list[list[int]] = []
    for _ in range(3):  # three "questions"
        stem = rng.integers(3, vocab, size=int(rng.integers(9, 20))).tolist()
        for _ in range(int(rng.integers(2, 5))):  # options branching off the stem
            inputs.append(stem + rng.integers(3, vocab, size=int(rng.integers(1, 6))).tolist())
        inputs.append(stem[: int(rng.integers(1, len(stem)))])  # ends inside the others
        inputs.append(list(stem))  # exactly the shared stem
    inputs.append([int(rng.integers(3, vocab))])  # one token, no shared first token
    inputs.append(list(inputs[0]))  # a duplicate request
    positions = []
    for x in inputs:  # some reads in the shared part, always the last position
        k = int(rng.integers(1, min(4, len(x)) + 1))
        positions.append(sorted({*rng.choice(len(x), size=k, replace=False).tolist(), len(x) - 1}))
    return inputs, positions


def _both(model: object, inputs: list[list[int]], positions: list[list[int]], batch_size: int):
    with tqdm(disable=True) as bar:
        tree = dict(_loglik.tree_rows(model, inputs, positions, batch_size=batch_size, bar=bar))
        padded = dict(_loglik.padded_rows(model, inputs, positions, batch_size=batch_size, bar=bar))
    assert sorted(tree) == sorted(padded) == list(range(len(inputs)))  # every request, once
    return tree, padded


@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma", "tiny_no_bos"])
def test_tree_equals_padded(fixture: str, batch_size: int, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    inputs, positions = _requests(model.cfg.d_vocab, seed=batch_size)
    tree, padded = _both(model, inputs, positions, batch_size)
    for r in range(len(inputs)):
        assert tree[r].shape == (len(positions[r]), model.cfg.d_vocab)
        torch.testing.assert_close(tree[r], padded[r], **TOL)


@pytest.mark.parametrize(
    "family", ["gpt2", "gpt_neox", "opt", "phi", "mistral", "gemma2", "bloom", "qwen3"]
)
def test_tree_equals_padded_across_architectures(family: str) -> None:
    """Learned, rotary and ALiBi positions; sliding windows of 8 under longer shared stems."""
    assert family in ARCHITECTURES
    model, _ = _models(family)
    inputs, positions = _requests(model.cfg.d_vocab, seed=7)
    tree, padded = _both(model, inputs, positions, batch_size=4)
    for r in range(len(inputs)):
        torch.testing.assert_close(tree[r], padded[r], **TOL)


def test_many_windows(tiny: object) -> None:
    """More requests than one window of caches holds: taken window by window, all answered."""
    inputs, positions = [], []
    for seed in range(5):
        x, p = _requests(tiny.cfg.d_vocab, seed=100 + seed)
        inputs += x
        positions += p
    assert len(inputs) > _loglik.WINDOW * 1
    tree, padded = _both(tiny, inputs, positions, batch_size=1)
    for r in range(len(inputs)):
        torch.testing.assert_close(tree[r], padded[r], **TOL)


def test_each_distinct_prefix_runs_once() -> None:
    inputs, positions = _requests(50, seed=3)
    roots = _loglik.prefix_tree(inputs, positions)
    nodes, stack = [], list(roots)
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack += node.children
    distinct = {tuple(x[:k]) for x in inputs for k in range(1, len(x) + 1)}
    assert sum(n.end - n.start for n in nodes) == len(distinct)
    ends = sorted(r for n in nodes for r in n.ending)
    assert ends == list(range(len(inputs)))  # every request ends at exactly one node


def test_split_by_length_is_optimal() -> None:
    """The dynamic program against every split of a sorted list into contiguous forwards."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        lengths = rng.integers(1, 40, size=int(rng.integers(1, 8))).tolist()
        max_rows, max_tokens, cost = int(rng.integers(1, 5)), 80, int(rng.integers(0, 60))
        got = _loglik.split_by_length(lengths, max_rows=max_rows, max_tokens=max_tokens, cost=cost)
        assert sorted(i for span in got for i in span) == list(range(len(lengths)))

        def price(spans: list[list[int]], lengths=lengths, cost=cost) -> int:
            return sum(cost + len(s) * max(lengths[i] for i in s) for s in spans)

        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        best = None
        for cuts in itertools.product([0, 1], repeat=len(order) - 1):
            spans, cur = [], [order[0]]
            for c, i in zip(cuts, order[1:], strict=True):
                if c:
                    spans.append(cur)
                    cur = []
                cur.append(i)
            spans.append(cur)
            ok = all(
                len(s) <= max_rows and (len(s) == 1 or len(s) * lengths[s[0]] <= max_tokens)
                for s in spans
            )
            if ok and (best is None or price(spans) < best):
                best = price(spans)
        assert price(got) == best


def test_scores_with_either_engine_agree(tiny: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The public entry point: expression_scores through the tree and through the padded engine."""
    ds = _short(mechlin.load_mcq("arc_easy"), 6)
    kw = dict(shots=1, shot_pool=_short(mechlin.load_mcq("arc_easy_test"), 12), n_samples=4)
    tree = mechlin.expression_scores(tiny, ds, **kw, progress=False)
    monkeypatch.setattr(mechlin.cognition.expression, "_force_padded", True)
    padded = mechlin.expression_scores(tiny, ds, **kw, progress=False)
    finite = torch.isfinite(padded.option_loglik)
    assert torch.equal(finite, torch.isfinite(tree.option_loglik))
    torch.testing.assert_close(tree.option_loglik[finite], padded.option_loglik[finite], **TOL)
    torch.testing.assert_close(tree.letter_logprob, padded.letter_logprob, **TOL)
