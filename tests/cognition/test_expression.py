"""Expression scoring: batched scores equal one prompt at a time and a plain Hugging Face loop."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.special import comb

from mechlin.cognition.expression import (
    encode_continuation,
    expression_scores,
    pass_at_k,
    score_options,
)
from mechlin.datasets.mcq import load_mcq
from mechlin.errors import ArgumentError, EmptyInputError, OutOfRangeError, StoreMismatchError
from mechlin.models import load_hf_model
from mechlin.tiny import tiny_hf_model, tiny_tokenizer
from tests.reference.cognition_ref import hf_loglik

# the plain Hugging Face model and tokenizer behind each fixture (not the bridge's wrapped copy)
_PLAIN = {
    "tiny": lambda: (tiny_hf_model(seed=0), tiny_tokenizer()),
    "tiny_gemma": lambda: (tiny_hf_model(arch="gemma3", seed=1), tiny_tokenizer()),
    "tiny_no_bos": lambda: (tiny_hf_model(seed=2), tiny_tokenizer(add_bos=False)),
    "smollm2": lambda: load_hf_model("smollm2-135m"),
}


# Scores of the same texts computed in other batches (other sizes, other padding) agree to
# float32 rounding, not bit for bit: CPU kernels may round each token's log-probability by a few
# ulps of the log-softmax's normalizer (~6 on the tiny models' 400 tokens: 1e-5 is ~20 ulps),
# and a log-likelihood sums same-signed float32 log-probabilities, so its rounding is relative
# to the sum: 8 eps of it (a log-likelihood of ~70 is 1 ulp = 7.6e-6 away from its neighbour,
# which an absolute 1e-5 alone would not allow twice).
BATCHED = dict(rtol=8 * torch.finfo(torch.float32).eps, atol=1e-5)


def _hf_loglik(fixture: str, prompt: str, option: str) -> float:
    hf, tok = _PLAIN[fixture]()
    return hf_loglik(hf, tok, prompt, option)


def _short(ds: object, n: int) -> object:
    """The first ``n`` items short enough for a few-shot prompt in the tiny model's context."""
    keep = [i for i, it in enumerate(ds) if len(it.question) + sum(map(len, it.choices)) < 90]
    return ds.subset(keep[:n])


PROMPT = "Question: Where is the Eiffel Tower?\nAnswer:"
OPTIONS = [" Paris", " in the city of Rome", " London", " Seattle is"]


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma", "tiny_no_bos"])
def test_score_options_equals_hf_loop(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    got = score_options(model, PROMPT, OPTIONS, batch_size=3)
    want = torch.tensor([_hf_loglik(fixture, PROMPT, o) for o in OPTIONS], dtype=torch.float64)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_batched_equals_one_at_a_time(tiny: object) -> None:
    batched = score_options(tiny, PROMPT, OPTIONS, batch_size=4)
    single = torch.cat([score_options(tiny, PROMPT, [o], batch_size=1) for o in OPTIONS])
    torch.testing.assert_close(batched, single, **BATCHED)


def test_trailing_space_moves_to_continuation(tiny: object) -> None:
    a, n_a = encode_continuation(tiny, "The capital of France is ", "Paris")
    b, n_b = encode_continuation(tiny, "The capital of France is", " Paris")
    assert (a, n_a) == (b, n_b)


def test_expression_scores_batched_equals_single(tiny: object) -> None:
    ds = _short(load_mcq("arc_easy"), 5)
    pool = _short(load_mcq("arc_easy_test"), 20)
    kw = dict(shots=1, shot_pool=pool, n_samples=6, progress=False)
    big = expression_scores(tiny, ds, batch_size=8, chunk_size=5, **kw)
    small = expression_scores(tiny, ds, batch_size=1, chunk_size=2, **kw)
    torch.testing.assert_close(big.option_loglik, small.option_loglik, **BATCHED)
    torch.testing.assert_close(big.letter_logprob, small.letter_logprob, **BATCHED)
    assert torch.equal(big.n_correct, small.n_correct)
    # each option's cloze score is score_options on the item's own context
    item = ds[2]
    from mechlin.cognition.prompts import cloze_context, cloze_options, draw_shots, with_shots

    shots = draw_shots(ds, pool, 1, seed=0)[2]
    ref = score_options(
        tiny, with_shots(cloze_context(item), shots, style="cloze"), cloze_options(item)
    )
    torch.testing.assert_close(big.option_loglik[2, : len(ref)], ref, **BATCHED)


def test_accuracies_follow_the_scores(tiny: object) -> None:
    ds = _short(load_mcq("commonsenseqa"), 6)
    s = expression_scores(tiny, ds, progress=False)
    acc = (s.option_loglik.argmax(-1) == s.answer).float().mean()
    assert s.acc == pytest.approx(float(acc))
    norm = s.option_loglik / s.option_chars.clamp(min=1)
    assert s.acc_norm == pytest.approx(float((norm.argmax(-1) == s.answer).float().mean()))
    assert s.chance == pytest.approx(0.2)
    assert s.chance_pass_at(1) == pytest.approx(0.2)
    assert s.chance_pass_at(3) == pytest.approx(1 - 0.8**3)
    assert len(s.to_frame()) == 6
    assert "acc" in s.summary()


def test_resume_from_store(tiny: object, tmp_path: object) -> None:
    ds = _short(load_mcq("arc_challenge"), 4)
    first = expression_scores(tiny, ds, chunk_size=2, out=tmp_path, progress=False)
    again = expression_scores(tiny, ds, chunk_size=2, out=tmp_path, progress=False)
    assert torch.equal(first.option_loglik, again.option_loglik)
    with pytest.raises(StoreMismatchError):
        expression_scores(
            tiny, ds, chunk_size=2, shots=0, n_samples=3, out=tmp_path, progress=False
        )


@pytest.mark.parametrize(
    "n,c,k", [(10, 0, 1), (10, 3, 1), (10, 3, 4), (5, 5, 5), (20, 7, 10), (8, 2, 7)]
)
def test_pass_at_k_equals_closed_form(n: int, c: int, k: int) -> None:
    want = 1 - comb(n - c, k, exact=True) / comb(n, k, exact=True)
    assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)


def test_bad_inputs(tiny: object) -> None:
    ds = _short(load_mcq("arc_easy"), 2)
    with pytest.raises(OutOfRangeError, match="k=5"):
        pass_at_k(4, 1, 5)
    with pytest.raises(OutOfRangeError, match="shots=30"):
        expression_scores(tiny, ds, shots=30, shot_pool=_short(load_mcq("arc_easy_test"), 10))
    with pytest.raises(ArgumentError, match="shares"):
        expression_scores(tiny, ds, shots=1, shot_pool=ds)
    with pytest.raises(ArgumentError, match="shot_pool"):
        expression_scores(tiny, ds, shots=1)
    with pytest.raises(EmptyInputError):
        score_options(tiny, PROMPT, [])
    with pytest.raises(ArgumentError):
        score_options(tiny, "", [" a"])
    s = expression_scores(tiny, ds, n_samples=2, progress=False)
    with pytest.raises(OutOfRangeError):
        s.pass_at(3)
    assert not math.isnan(s.pass_at(2))


@pytest.mark.bundled
def test_smollm2_scores_equal_hf_loop(smollm2: object) -> None:
    ds = load_mcq("arc_easy").subset(range(2))
    from mechlin.cognition.prompts import cloze_context, cloze_options

    s = expression_scores(smollm2, ds, batch_size=8, progress=False)
    hf, tok = load_hf_model("smollm2-135m")
    for i, item in enumerate(ds):
        want = [hf_loglik(hf, tok, cloze_context(item), o) for o in cloze_options(item)]
        torch.testing.assert_close(
            s.option_loglik[i, : len(want)],
            torch.tensor(want, dtype=torch.float64),
            # float32 sums of ~10 token log-probabilities (|loglik| ~ 30), batched and padded
            # against one sequence at a time: CPU kernels differ by ~6e-6 relative on some
            # machines (1.6e-4 absolute was seen), far below any wrong token (>= 0.1).
            atol=1e-4,
            rtol=2e-5,
        )


@pytest.mark.bundled
def test_smollm2_one_row_letters_equal_per_letter(
    smollm2: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mechlin.cognition import expression

    ds = load_mcq("openbookqa").subset(range(3))
    fast = expression_scores(smollm2, ds, n_samples=4, sample_from="vocab", progress=False)
    monkeypatch.setattr(expression, "_force_per_letter", True)
    slow = expression_scores(smollm2, ds, n_samples=4, sample_from="vocab", progress=False)
    torch.testing.assert_close(fast.letter_logprob, slow.letter_logprob, atol=1e-4, rtol=0)
    assert torch.equal(fast.generated_correct, slow.generated_correct)
    assert torch.equal(fast.n_correct, slow.n_correct)


def test_cloze_only_scores_equal_the_full_run(tiny: object) -> None:
    """letters=False does lm-eval's work only: the same cloze scores, letter metrics refused."""
    ds = _short(load_mcq("arc_easy"), 6)
    full = expression_scores(tiny, ds, progress=False)
    cloze = expression_scores(tiny, ds, letters=False, progress=False)
    finite = torch.isfinite(full.option_loglik)
    assert torch.equal(finite, torch.isfinite(cloze.option_loglik))
    torch.testing.assert_close(cloze.option_loglik[finite], full.option_loglik[finite], **BATCHED)
    assert set(cloze.metrics()) == {"acc", "acc_norm"}
    assert "letters not scored" in cloze.summary()
    with pytest.raises(ArgumentError, match="letters were not scored"):
        _ = cloze.letter_acc
    with pytest.raises(ArgumentError, match="needs letters=True"):
        expression_scores(tiny, ds, letters=False, n_samples=4, progress=False)
