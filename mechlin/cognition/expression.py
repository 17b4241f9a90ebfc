"""Expression: what a model *says* on multiple-choice questions (Yan et al. 2024's "expressive").

Three ways of reading the model's answer, all batched:

- Option log-likelihood, the lm-evaluation-harness way (``acc`` / ``acc_norm``): each option is
  a continuation of the cloze context ``"Question: ...\\nAnswer:"``; its score is the sum of
  the log-probs of its tokens after the context's tokens. ``acc`` picks the highest sum,
  ``acc_norm`` the highest sum divided by the option's length in characters (lm-eval's
  ``acc_norm``). ``score_options(model, prompt, options)`` is the primitive.
- Letter answering: the options listed ``"A. ..."``, the model's next-token log-probs of the
  letter tokens ``" A"``, ``" B"``... after ``"Answer:"``. ``letter_acc``: the top letter among
  the item's letters is right; ``generated_acc``: the unrestricted top token is the right letter
  (a greedy one-token generation). Where a tokenizer splits a letter continuation into several
  tokens (tiny test tokenizers do), its score is the summed log-prob of its tokens and
  "generated" means greedy decoding reproduces all of them.
- Repeated sampling (``n_samples``): ``n`` letters sampled at ``temperature`` per item in one
  ``torch.multinomial`` call (from the item's letters, mechlin's default, or from the whole
  vocabulary with ``sample_from="vocab"``, where any non-letter token is wrong), counted correct
  when they are the right letter; ``pass_at(k)`` is Chen et al.'s (2021) unbiased estimator
  ``1 - C(n - c, k) / C(n, k)``, averaged over items. Pitfall: with 4 letters even uniform
  guessing reaches pass@4 = 0.68 and pass@8 = 0.90 (``chance_pass_at``); a pass@k that "closes
  the gap" must be read against that.

Token boundary (lm-eval's rule): the continuation carries its leading space; trailing whitespace
of a context is moved to the front of the continuation; ``prompt + option`` is encoded whole
(with BOS as the model's tokenizer adds it) and the continuation's tokens are the ones after
the context's own tokens.

Engine (``mechlin.cognition._loglik``): every request of a chunk (each cloze option, each letter
prompt) goes into one prefix tree, and each distinct token prefix runs once, against the
key-value cache of its ancestors: an item's options share its question, and its letter prompt
shares the question too. The forward stops at the final residual stream and only the rows that
are read are unembedded. Tested against the plain right-padded engine (every request whole) on
every architecture family and against a one-text-at-a-time Hugging Face loop; the scores agree
to float32 rounding. ``benchmarks/expression_vs_lm_eval.py`` compares it with lm-evaluation-
harness 0.4.13 on the same local task: the same acc and acc_norm to the item, faster.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechlin import viz
from mechlin._checks import NONNEG, checked
from mechlin._store import ItemStore
from mechlin._types import Model
from mechlin.cognition import _loglik
from mechlin.cognition.prompts import (
    cloze_context,
    cloze_options,
    draw_shots,
    letter_options,
    letter_prompt,
    with_shots,
)
from mechlin.datasets.mcq import MCQDataset
from mechlin.errors import (
    ArgumentError,
    ArgumentTypeError,
    EmptyInputError,
    OutOfRangeError,
    TokenizationError,
)
from mechlin.results import Result
from mechlin.runners import Item, Runner, as_runner

SampleFrom = Literal["letters", "vocab"]
_KIND = "expression_scores"


# ---------------------------------------------------------------- tokens and batched scoring


@checked
def encode_continuation(model: Model, context: str, continuation: str) -> tuple[list[int], int]:
    """Token ids of ``context + continuation`` and how many of them belong to the context.

    lm-eval's rule: trailing whitespace of ``context`` moves to the continuation, the whole
    text is encoded once, and the continuation is every token after the context's own tokens.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if not context:
        raise ArgumentError("the prompt is empty: there is nothing to score the options after")
    if not continuation:
        raise ArgumentError(f"an option after prompt {context[-40:]!r} is empty")
    whole = model.to_tokens(context + continuation, truncate=False)[0].tolist()
    n_ctx = len(model.to_tokens(context, truncate=False)[0])
    limit = getattr(model.cfg, "n_ctx", None)
    if limit is not None and len(whole) > int(limit):
        raise OutOfRangeError(
            f"prompt and option are {len(whole)} tokens, more than the model's context of "
            f"{limit}: use fewer shots or shorter questions"
        )
    if n_ctx >= len(whole):
        raise TokenizationError(
            f"option {continuation!r} adds no token after prompt ...{context[-40:]!r}"
        )
    return whole, n_ctx


_force_padded = False  # tests set it to check the prefix-tree engine against the padded one


def _logprob_rows(
    model: Model,
    inputs: Sequence[list[int]],
    positions: Sequence[list[int]],
    *,
    batch_size: int,
    bar: Any,
) -> Iterator[tuple[int, Float[Tensor, "pos vocab"]]]:
    """``(request, log-softmax rows at its positions)`` for every request (see ``_loglik``)."""
    engine = _loglik.padded_rows if _force_padded else _loglik.tree_rows
    return engine(model, inputs, positions, batch_size=batch_size, bar=bar)


def _score_pairs(
    model: Model,
    pairs: Sequence[tuple[list[int], int]],
    *,
    batch_size: int,
    bar: Any,
) -> Float[Tensor, " request"]:
    """Summed log-prob of each continuation ``whole[n_ctx:]`` given ``whole[:n_ctx]``."""
    inputs = [whole[:-1] for whole, _ in pairs]
    positions = [list(range(n_ctx - 1, len(whole) - 1)) for whole, n_ctx in pairs]
    out = torch.empty(len(pairs), dtype=torch.float64)
    for i, rows in _logprob_rows(model, inputs, positions, batch_size=batch_size, bar=bar):
        whole, n_ctx = pairs[i]
        target = torch.tensor(whole[n_ctx:])
        out[i] = rows.gather(1, target[:, None]).sum().double()
    return out


@checked
def score_options(
    model: Model,
    prompt: str,
    options: Sequence[str],
    *,
    batch_size: int = 16,
) -> Float[Tensor, " option"]:
    """Log-likelihood of each option as a continuation of ``prompt`` (lm-eval's ``loglikelihood``).

    Options are appended verbatim: give them their leading space (``[" Paris", " Rome"]``).

    >>> import mechlin
    >>> model = mechlin.tiny_model()
    >>> score_options(model, "The capital of France is", [" Paris", " Rome"]).shape
    torch.Size([2])
    """
    if isinstance(options, str):
        raise ArgumentTypeError("options must be a sequence of strings, not one string")
    if len(options) == 0:
        raise EmptyInputError("options is empty: pass at least one option")
    _check_batch(batch_size)
    pairs = [encode_continuation(model, prompt, o) for o in options]
    with tqdm(disable=True) as bar:
        return _score_pairs(model, pairs, batch_size=batch_size, bar=bar)


def _check_batch(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"batch_size must be a positive int, got {batch_size!r}")


# ---------------------------------------------------------------- pass@k


@checked
def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al.'s unbiased pass@k from ``n`` samples of which ``c`` are correct.

    ``1 - C(n - c, k) / C(n, k)``, computed as a stable product.

    >>> round(pass_at_k(10, 3, 1), 4), round(pass_at_k(10, 3, 5), 4)
    (0.3, 0.9167)
    """
    if k < 1 or n < 1:
        raise OutOfRangeError(f"pass@k needs n >= 1 and k >= 1, got n={n}, k={k}")
    if k > n:
        raise OutOfRangeError(f"pass@k with k={k} needs at least k samples; only n={n} drawn")
    if not 0 <= c <= n:
        raise OutOfRangeError(f"c={c} correct samples is not in 0..n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


# ---------------------------------------------------------------- the result


@dataclass(frozen=True)
class ExpressionScores(Result):
    """A model's answers to a multiple-choice set, scored four ways (see the module docstring).

    Per-choice tensors are padded to the most choices of any item with ``-inf``.
    """

    model_name: str
    dataset: str
    shots: int
    item_ids: tuple[str, ...]
    answer: Int[Tensor, " item"]
    n_choices: Int[Tensor, " item"]
    option_loglik: Float[Tensor, "item choice"]  # summed log-prob of " " + option (cloze)
    option_chars: Int[Tensor, "item choice"]  # characters of the option (lm-eval's acc_norm)
    letter_logprob: Float[Tensor, "item choice"]  # log p(" A"), ... over the whole vocabulary
    generated_correct: Bool[Tensor, " item"]  # the unrestricted top next token is the answer
    n_samples: int
    temperature: float
    sample_from: str
    n_correct: Int[Tensor, " item"]  # correct letters among the n_samples samples
    letters_scored: bool = True  # False: cloze only (expression_scores(letters=False))

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for name in ("answer", "n_choices", "generated_correct", "n_correct"):
            if getattr(self, name).shape != (n,):
                raise ArgumentError(f"{name} must have one entry per item ({n})")
        shape = self.option_loglik.shape
        if shape[0] != n or self.letter_logprob.shape != shape or self.option_chars.shape != shape:
            raise ArgumentError("option_loglik, option_chars, letter_logprob: [item, choice]")

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def _correct(self, scores: Tensor) -> Tensor:
        return scores.argmax(-1) == self.answer

    def correct(self, metric: Literal["acc", "acc_norm", "letter"] = "acc") -> Tensor:
        """Per item, whether ``metric``'s choice is the answer (``acc`` and friends average it)."""
        if metric == "acc":
            return self._correct(self.option_loglik)
        if metric == "acc_norm":
            return self._correct(self.option_loglik / self.option_chars.clamp(min=1).double())
        if metric == "letter":
            self._need_letters()
            return self._correct(self.letter_logprob)
        raise ArgumentError(f"metric must be 'acc', 'acc_norm' or 'letter', not {metric!r}")

    def _need_letters(self) -> None:
        if not self.letters_scored:
            raise ArgumentError(
                "the letters were not scored (letters=False): rerun expression_scores with "
                "letters=True for letter and generated accuracy"
            )

    @property
    def acc(self) -> float:
        """Share of items whose highest-likelihood option is the answer."""
        return float(self.correct("acc").float().mean())

    @property
    def acc_norm(self) -> float:
        """As ``acc`` with each option's log-likelihood divided by its character length."""
        return float(self.correct("acc_norm").float().mean())

    @property
    def letter_acc(self) -> float:
        """Share of items whose most probable letter (among the item's letters) is right."""
        return float(self.correct("letter").float().mean())

    @property
    def generated_acc(self) -> float:
        """Share of items whose greedy next token is the right letter."""
        self._need_letters()
        return float(self.generated_correct.float().mean())

    @property
    def chance(self) -> float:
        return float((1.0 / self.n_choices.double()).mean())

    def pass_at(self, k: int) -> float:
        """Mean over items of the unbiased pass@k of the sampled letters."""
        if self.n_samples == 0:
            raise ArgumentError("no letters were sampled: rerun with n_samples >= k")
        return float(
            np.mean([pass_at_k(self.n_samples, int(c), k) for c in self.n_correct.tolist()])
        )

    def chance_pass_at(self, k: int) -> float:
        """pass@k of a model sampling letters uniformly: ``1 - (1 - 1/choices)^k``, averaged.

        Sampled letters hit the answer by luck once k nears the number of choices: compare
        ``pass_at(k)`` with this, not with 1-shot chance.
        """
        return float((1 - (1 - 1 / self.n_choices.double()) ** k).mean())

    def metrics(self, pass_k: Sequence[int] = ()) -> dict[str, float]:
        """The headline numbers by name (``acc``, ``acc_norm``, ``letter``, ``pass@k``)."""
        out = dict(acc=self.acc, acc_norm=self.acc_norm)
        if self.letters_scored:
            out.update(letter=self.letter_acc, generated=self.generated_acc)
        out.update({f"pass@{k}": self.pass_at(k) for k in pass_k})
        return out

    def summary(self) -> str:
        lines = [
            f"Expression of {self.model_name or 'the model'} on {self.dataset} "
            f"({self.n_items} items, {self.shots}-shot; chance {self.chance:.3f})",
            f"  acc {self.acc:.3f}   acc_norm {self.acc_norm:.3f}   "
            + (
                f"letter {self.letter_acc:.3f}   generated letter {self.generated_acc:.3f}"
                if self.letters_scored
                else "letters not scored"
            ),
        ]
        if self.n_samples:
            ks = [k for k in (1, 2, 4, 8, 16) if k <= self.n_samples]
            shown = "  ".join(
                f"pass@{k} {self.pass_at(k):.3f} (chance {self.chance_pass_at(k):.2f})" for k in ks
            )
            lines.append(
                f"  {self.n_samples} samples at T={self.temperature} from {self.sample_from}: "
                + shown
            )
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:

        fig, ax = viz.axes(ax, figsize=(6, 3.5))
        names = list(self.metrics())
        values = list(self.metrics().values())
        ax.bar(names, values, color="tab:orange")
        ax.axhline(self.chance, color="grey", ls="--", lw=1, label="chance")
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{self.dataset}, {self.shots}-shot")
        ax.legend()
        return fig

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        letters = self.letter_logprob.argmax(-1)
        return pd.DataFrame(
            dict(
                item_id=list(self.item_ids),
                answer=self.answer.tolist(),
                acc=self._correct(self.option_loglik).tolist(),
                letter_pred=letters.tolist(),
                letter=(letters == self.answer).tolist(),
                generated=self.generated_correct.tolist(),
                n_correct=self.n_correct.tolist(),
            )
        )


# ---------------------------------------------------------------- scoring a dataset


_force_per_letter = False  # tests set it to check the one-row path against the per-letter one


def _settings_key(dataset: MCQDataset) -> str:
    h = hashlib.sha256()
    for it in dataset:
        h.update(repr((it.id, it.question, it.choices, it.answer)).encode())
    return h.hexdigest()


@checked(rules={"n_samples": NONNEG})  # n_samples=0: no repeated sampling
def expression_scores(
    model: Model,
    dataset: MCQDataset,
    *,
    shots: int = 0,
    shot_pool: MCQDataset | None = None,
    n_samples: int = 0,
    temperature: float | int = 1.0,
    sample_from: SampleFrom = "letters",
    seed: int = 0,
    batch_size: int = 16,
    chunk_size: int = 64,
    letters: bool = True,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    runner: Runner | None = None,
) -> ExpressionScores:
    """Score ``model``'s answers on ``dataset``: cloze likelihoods, letters, sampled letters.

    ``shots`` worked examples per item come from ``shot_pool`` (disjoint from ``dataset``;
    drawn per item with ``seed``). ``n_samples`` letters per item are sampled at
    ``temperature`` for pass@k (seeded per item, so batching changes nothing). With ``out=`` a
    directory, chunks of ``chunk_size`` items are stored as they finish and a rerun resumes.
    ``runner=mechlin.RayRunner(...)`` scores the chunks on Ray workers (the same scores).
    ``letters=False`` scores the cloze options only (lm-eval's ``acc`` / ``acc_norm`` work): the
    letter metrics then raise, and ``n_samples`` must be 0.
    """
    if not isinstance(dataset, MCQDataset):
        raise ArgumentTypeError(f"dataset must be an MCQDataset (load_mcq), not {type(dataset)}")
    if len(dataset) == 0:
        raise EmptyInputError("the dataset has no items")
    _check_batch(batch_size)
    if sample_from not in get_args(SampleFrom):
        raise ArgumentError(
            f"sample_from must be one of {get_args(SampleFrom)}, not {sample_from!r}"
        )
    if n_samples < 0:
        raise OutOfRangeError(f"n_samples must be >= 0, got {n_samples}")
    if n_samples and not temperature > 0:
        raise OutOfRangeError(f"temperature must be > 0 to sample, got {temperature}")
    if chunk_size < 1:
        raise ArgumentError(f"chunk_size must be positive, got {chunk_size}")
    if n_samples and not letters:
        raise ArgumentError("n_samples samples letters: it needs letters=True")
    shot_lists = draw_shots(dataset, shot_pool, shots, seed=seed)
    model_name = str(getattr(model.cfg, "model_name", ""))
    chunks = [
        range(s, min(s + chunk_size, len(dataset))) for s in range(0, len(dataset), chunk_size)
    ]
    store = None
    if out is not None:
        settings = dict(
            model=model_name,
            items=_settings_key(dataset),
            shots=shots,
            shot_pool=_settings_key(shot_pool) if shot_pool is not None and shots else None,
            n_samples=n_samples,
            temperature=float(temperature),
            sample_from=sample_from,
            seed=seed,
            chunk_size=chunk_size,
            **({} if letters else {"letters": False}),  # older stores stay valid
        )
        store = ItemStore(out, kind=_KIND, settings=settings)
    options = dict(
        n_samples=n_samples,
        temperature=float(temperature),
        sample_from=sample_from,
        seed=seed,
        batch_size=batch_size,
        letters=letters,
    )
    work = [
        Item(
            f"chunk{c:06d}",
            dict(options, chunk=chunk, items={i: dataset[i] for i in chunk},
                 shots={i: shot_lists[i] for i in chunk}),
            size=len(chunk),
        )
        for c, chunk in enumerate(chunks)
    ]  # fmt: skip
    found = as_runner(runner).map(
        model,
        _chunk_work,
        work,
        store=store,
        progress=progress,
        desc=f"expression {dataset.name}",
    )
    parts = [found[w.key] for w in work]
    if store is not None and not store.complete:
        store.finish(dict(n_items=len(dataset)))
    width = max(int(p["option_loglik"].shape[1]) for p in parts)

    def cat(name: str, fill: float | int) -> Tensor:
        padded = [
            torch.nn.functional.pad(p[name], (0, width - p[name].shape[1]), value=fill)
            for p in parts
        ]
        return torch.cat(padded)

    return ExpressionScores(
        model_name=model_name,
        dataset=dataset.name,
        shots=shots,
        item_ids=dataset.ids,
        answer=torch.tensor([it.answer for it in dataset]),
        n_choices=torch.tensor([len(it.choices) for it in dataset]),
        option_loglik=cat("option_loglik", -math.inf),
        option_chars=cat("option_chars", 0).long(),
        letter_logprob=cat("letter_logprob", -math.inf),
        generated_correct=torch.cat([p["generated_correct"] for p in parts]),
        n_samples=n_samples,
        temperature=float(temperature),
        sample_from=sample_from,
        n_correct=torch.cat([p["n_correct"] for p in parts]),
        letters_scored=letters,
    )


def _chunk_work(model: Model, payload: dict[str, Any]) -> dict[str, Tensor]:
    """All scores of one chunk of items (the runners' unit of work)."""
    return _score_chunk(
        model,
        payload["items"],
        payload["shots"],
        payload["chunk"],
        payload["n_samples"],
        payload["temperature"],
        payload["sample_from"],
        payload["seed"],
        payload["batch_size"],
        payload.get("letters", True),
    )


def _score_chunk(
    model: Model,
    dataset: Mapping[int, Any],
    shot_lists: Mapping[int, list[Any]],
    chunk: range,
    n_samples: int,
    temperature: float,
    sample_from: str,
    seed: int,
    batch_size: int,
    letters: bool = True,
) -> dict[str, Tensor]:
    """All scores of the items in ``chunk``, cloze and letter requests in one engine call."""
    items = [dataset[i] for i in chunk]
    width = max(len(it.choices) for it in items)
    # every request: its input, the positions read, the target token at each (cloze) or the
    # letter tokens at its one position (letters), and (item, option, kind)
    inputs: list[list[int]] = []
    positions: list[list[int]] = []
    targets: list[list[int]] = []
    owner: list[tuple[int, int, str]] = []
    for j, (i, it) in enumerate(zip(chunk, items, strict=True)):
        context = with_shots(cloze_context(it), shot_lists[i], style="cloze")
        for o, option in enumerate(cloze_options(it)):
            whole, n = encode_continuation(model, context, option)
            inputs.append(whole[:-1])
            positions.append(list(range(n - 1, len(whole) - 1)))
            targets.append(whole[n:])
            owner.append((j, o, "cloze"))
        if not letters:
            continue
        # letters: one request per item read at its last prompt token when every letter is one
        # token (real tokenizers); else one teacher-forced request per (item, letter)
        prompt = with_shots(letter_prompt(it), shot_lists[i], style="letter")
        encoded = [encode_continuation(model, prompt, x) for x in letter_options(it)]
        single = all(len(w) - n == 1 and w[:n] == encoded[0][0][:n] for w, n in encoded)
        if single and not _force_per_letter:
            ids = encoded[0][0][: encoded[0][1]]
            inputs.append(ids)
            positions.append([len(ids) - 1])
            targets.append([w[-1] for w, _ in encoded])
            owner.append((j, -1, "letters"))
        else:
            for o, (w, n) in enumerate(encoded):
                inputs.append(w[:-1])
                positions.append(list(range(n - 1, len(w) - 1)))
                targets.append(w[n:])
                owner.append((j, o, "letter"))
    option_loglik = torch.full((len(items), width), -math.inf, dtype=torch.float64)
    option_chars = torch.zeros(len(items), width, dtype=torch.long)
    letter_logprob = torch.full((len(items), width), -math.inf, dtype=torch.float64)
    generated = torch.zeros(len(items), dtype=torch.bool)
    n_correct = torch.zeros(len(items), dtype=torch.long)
    # per item and letter: summed log-prob, greedy-reproduces flag, log p at temperature
    lp_sum = torch.full((len(items), width), -math.inf, dtype=torch.float64)
    greedy = torch.zeros(len(items), width, dtype=torch.bool)
    lp_temp = torch.full((len(items), width), -math.inf, dtype=torch.float64)
    t = float(temperature) if n_samples else 1.0
    with tqdm(disable=True) as quiet:
        for r, rows in _logprob_rows(model, inputs, positions, batch_size=batch_size, bar=quiet):
            j, o, kind = owner[r]
            target = torch.tensor(targets[r])
            if kind == "cloze":
                option_loglik[j, o] = rows.gather(1, target[:, None]).sum().double()
                option_chars[j, o] = len(items[j].choices[o])
                continue
            if kind == "letters":  # one row: every letter is a token of it
                row = rows[0]
                k = len(target)
                lp_sum[j, :k] = row[target].double()
                greedy[j, :k] = target == int(row.argmax())
            else:
                picked = rows.gather(1, target[:, None])[:, 0]
                lp_sum[j, o] = picked.double().sum()
                greedy[j, o] = bool((rows.argmax(-1) == target).all())
            if n_samples:
                rows_t = (rows.double() / t).log_softmax(-1)  # (pos, vocab) at temperature
                if kind == "letters":
                    lp_temp[j, :k] = rows_t[0, target]
                else:
                    lp_temp[j, o] = rows_t.gather(1, target[:, None]).sum()
    for j, (i, it) in enumerate(zip(chunk, items, strict=True)):
        k = len(it.choices)
        letter_logprob[j, :k] = lp_sum[j, :k]
        generated[j] = bool(greedy[j, it.answer])
        if n_samples:
            n_correct[j] = _sample_correct(
                lp_temp[j, :k], it.answer, n_samples, sample_from, seed, i
            )
    return dict(
        option_loglik=option_loglik,
        option_chars=option_chars,
        letter_logprob=letter_logprob,
        generated_correct=generated,
        n_correct=n_correct,
    )


def _sample_correct(
    logprobs_at_t: Float[Tensor, " choice"],
    answer: int,
    n: int,
    sample_from: str,
    seed: int,
    item: int,
) -> int:
    """How many of ``n`` letters sampled at the temperature (one multinomial call) are right.

    ``logprobs_at_t`` holds each letter's log-probability of being generated at the sampling
    temperature. ``"letters"`` samples among the item's letters (renormalised); ``"vocab"``
    samples from the whole vocabulary, where every non-letter outcome counts as wrong.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + item)
    if sample_from == "letters":
        probs = logprobs_at_t.softmax(-1)
        draws = torch.multinomial(probs, n, replacement=True, generator=generator)
        return int((draws == answer).sum())
    p = float(logprobs_at_t[answer].exp())
    probs = torch.tensor([1.0 - min(p, 1.0), min(p, 1.0)], dtype=torch.float64)
    draws = torch.multinomial(probs, n, replacement=True, generator=generator)
    return int(draws.sum())
