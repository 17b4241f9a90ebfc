"""Subject spans from character offsets, and answer tokens with their leading space."""

from __future__ import annotations

import pytest

import mechlin

EIFFEL = "The Eiffel Tower is located in the city of"


def _span_text(model: object, prompt: str, span: tuple[int, int]) -> str:
    ids = model.to_tokens(prompt)[0, span[0] : span[1]].tolist()  # type: ignore[attr-defined]
    return model.tokenizer.decode(ids)  # type: ignore[attr-defined]


@pytest.mark.parametrize("fixture", ["tiny", "tiny_no_bos"])
def test_span_covers_exactly_the_subject(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    span = mechlin.find_subject_span(model, EIFFEL, "Eiffel Tower")
    assert _span_text(model, EIFFEL, span).strip() == "Eiffel Tower"
    # Tokens just outside the span are not part of the subject.
    before = _span_text(model, EIFFEL, (span[0] - 1, span[0]))
    after = _span_text(model, EIFFEL, (span[1], span[1] + 1))
    assert "Eiffel" not in before and "Tower" not in after


def test_bos_shifts_positions_by_one(tiny: object, tiny_no_bos: object) -> None:
    with_bos = mechlin.find_subject_span(tiny, EIFFEL, "Eiffel Tower")
    without = mechlin.find_subject_span(tiny_no_bos, EIFFEL, "Eiffel Tower")
    assert tiny.to_tokens(EIFFEL)[0, 0] == tiny.tokenizer.bos_token_id  # type: ignore[attr-defined]
    assert with_bos == (without[0] + 1, without[1] + 1)


def test_subject_split_mid_token_takes_the_whole_tokens(tiny: object) -> None:
    full = mechlin.find_subject_span(tiny, EIFFEL, "Eiffel Tower")
    partial = mechlin.find_subject_span(tiny, EIFFEL, "ffel Tow")  # starts and ends inside tokens
    assert full[0] <= partial[0] and partial[1] <= full[1]
    text = _span_text(tiny, EIFFEL, partial)
    assert "ffel Tow" in text


def test_subject_at_position_zero(tiny_no_bos: object) -> None:
    assert mechlin.find_subject_span(tiny_no_bos, "Paris is the capital of", "Paris")[0] == 0


def test_subject_occurring_twice(tiny: object) -> None:
    prompt = "Paris is lovely, and Paris is the capital of"
    first = mechlin.find_subject_span(tiny, prompt, "Paris")
    last = mechlin.find_subject_span(tiny, prompt, "Paris", occurrence=-1)
    second = mechlin.find_subject_span(tiny, prompt, "Paris", occurrence=1)
    assert first[1] <= last[0] and last == second
    with pytest.raises(ValueError, match="occurs 2 time"):
        mechlin.find_subject_span(tiny, prompt, "Paris", occurrence=2)


def test_subject_not_in_prompt_shows_the_tokens(tiny: object) -> None:
    with pytest.raises(mechlin.SubjectNotFoundError) as err:
        mechlin.find_subject_span(tiny, EIFFEL, "Louvre")
    message = str(err.value)
    assert "Louvre" in message and "Prompt tokens" in message and "' located'" in message


def test_subject_with_wrong_case_gets_a_hint(tiny: object) -> None:
    with pytest.raises(mechlin.SubjectNotFoundError, match="capitalization"):
        mechlin.find_subject_span(tiny, EIFFEL, "eiffel tower")


def test_empty_subject_and_answer(tiny: object) -> None:
    with pytest.raises(mechlin.EmptyInputError):
        mechlin.find_subject_span(tiny, EIFFEL, "  ")
    with pytest.raises(mechlin.EmptyInputError):
        mechlin.answer_tokens(tiny, "")


@pytest.mark.bundled
@pytest.mark.parametrize("fixture", ["smollm2", "gemma"])
def test_spans_on_real_tokenizers(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    # SentencePiece (Gemma) and byte-level BPE (SmolLM2) both mark spaces inside tokens.
    for prompt, subject in [
        (EIFFEL, "Eiffel Tower"),
        ("Danielle Darrieux's mother tongue is", "Danielle Darrieux"),
        ("In Marshall Islands, the language spoken is a mixture of", "Marshall Islands"),
        ("Audible.com is owned by", "Audible.com"),
    ]:
        span = mechlin.find_subject_span(model, prompt, subject)
        assert _span_text(model, prompt, span).strip() == subject


def test_answer_tokens_get_one_leading_space(tiny: object) -> None:
    assert mechlin.answer_tokens(tiny, "Paris") == mechlin.answer_tokens(tiny, " Paris")
    ids = mechlin.answer_tokens(tiny, "Paris")
    assert tiny.tokenizer.decode(list(ids)) == " Paris"  # type: ignore[attr-defined]


def test_multi_token_answer_is_reported(tiny: object) -> None:
    ids = mechlin.answer_tokens(tiny, "Antarctica")
    assert len(ids) > 1
    with pytest.raises(mechlin.MultiTokenAnswerError, match="multi_token='first'"):
        mechlin.answer_token(tiny, "Antarctica")
    assert mechlin.answer_token(tiny, "Antarctica", multi_token="first") == ids[0]


@pytest.mark.bundled
def test_answer_token_on_real_model(smollm2: object) -> None:
    paris = mechlin.answer_token(smollm2, "Paris")
    assert smollm2.tokenizer.decode([paris]) == " Paris"  # type: ignore[attr-defined]
