"""Token positions of a subject in a prompt, and the token ids of an answer.

Subject spans are found from the tokenizer's character offsets, never by decoding tokens one
at a time and matching strings: per-token decodes of SentencePiece and byte-level BPE
vocabularies drop or mangle the leading space ("▁Tower", "ĠTower"), so string matching on them
finds the wrong span or none. A token belongs to the subject when its character range overlaps
the subject's, so a subject that starts or ends inside a token still gets that whole token.
Positions are those of ``model.to_tokens(prompt)``, BOS included when the model prepends one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from mechlin._checks import checked
from mechlin.errors import (
    ArgumentError,
    EmptyInputError,
    MultiTokenAnswerError,
    OutOfRangeError,
    SubjectNotFoundError,
    TokenizationError,
)


@runtime_checkable
class TokenizingModel(Protocol):
    """What these helpers need of a model: its tokenizer and its own tokenization."""

    tokenizer: object

    def to_tokens(self, input: str, prepend_bos: bool | None = ...) -> torch.Tensor: ...


def encode_with_offsets(
    tokenizer: Any, texts: list[str]
) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Token ids (no special tokens) and (start, end) character offsets of each text.

    The one place mechlin asks a tokenizer for offsets; it needs a fast (Rust) tokenizer.
    """
    if tokenizer is None:
        raise ArgumentError("the model has no tokenizer; load it with mechlin.load_model")
    if not getattr(tokenizer, "is_fast", False):
        raise ArgumentError(
            f"{type(tokenizer).__name__} is a slow tokenizer and gives no character offsets; "
            "load the model with a fast (Rust) Hugging Face tokenizer"
        )
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [
        (list(ids), [(int(s), int(e)) for s, e in offsets])
        for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
    ]


def _encode(model: TokenizingModel, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    return encode_with_offsets(model.tokenizer, [text])[0]


def _str_tokens(model: TokenizingModel, ids: list[int]) -> list[str]:
    return [model.tokenizer.decode([i]) for i in ids]  # type: ignore[attr-defined]


def input_device(model: Any) -> torch.device:
    """Where a model's input tokens go: the device of its token embedding.

    Under a device map (``load_model(..., device_map=...)``) the layers sit on several devices
    and the inputs must go where the embedding is; a model on one device gives that device.
    """
    embed = getattr(model, "embed", None)
    if embed is not None:
        for param in embed.parameters():
            return param.device
    return torch.device(getattr(model.cfg, "device", None) or "cpu")


def context_length(model: Any) -> int | None:
    """The model's context length (``cfg.n_ctx``), or None when it does not say."""
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    return int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None


def check_context(model: Any, n_tokens: int, *, what: str = "the text") -> None:
    """Raise ``OutOfRangeError`` if ``n_tokens`` (without BOS) do not fit the model's context."""
    n_ctx = context_length(model)
    n_bos = 1 if bool(getattr(getattr(model, "cfg", None), "default_prepend_bos", False)) else 0
    if n_ctx is not None and n_tokens + n_bos > n_ctx:
        raise OutOfRangeError(
            f"{what} is {n_tokens + n_bos} tokens but the model's context holds {n_ctx}: "
            "shorten it (positions past the context would be cut off silently)"
        )


def check_positions(positions: Sequence[int], n_pos: int, what: str = "positions") -> list[int]:
    """``positions`` as indices into ``n_pos`` tokens (negative ones count from the end).

    A position outside ``[-n_pos, n_pos)`` is an ``OutOfRangeError`` rather than wrapping around
    to another token.
    """
    bad = [int(p) for p in positions if not -n_pos <= int(p) < n_pos]
    if bad:
        raise OutOfRangeError(
            f"{what} {bad} are outside the prompt's {n_pos} tokens (valid: 0..{n_pos - 1}, or "
            f"-{n_pos}..-1 from the end)"
        )
    return [int(p) % n_pos for p in positions]


def prompt_offset(model: TokenizingModel, prompt: str) -> tuple[list[int], int]:
    """The prompt's ids without special tokens, and how many tokens ``to_tokens`` puts first.

    Raises if ``model.to_tokens(prompt)`` is not those ids with a prefix (a tokenizer whose
    behaviour changed under the model would otherwise shift every position silently).
    """
    ids, _ = _encode(model, prompt)
    check_context(model, len(ids), what="the prompt")
    full = model.to_tokens(prompt)[0].tolist()
    shift = len(full) - len(ids)
    if shift < 0 or full[shift:] != ids:
        raise TokenizationError(
            "model.to_tokens(prompt) does not equal the tokenizer's ids plus a prefix; "
            f"to_tokens: {full}, tokenizer: {ids}"
        )
    return ids, shift


@checked
def find_subject_span(
    model: TokenizingModel,
    prompt: str,
    subject: str,
    *,
    occurrence: int = 0,
) -> tuple[int, int]:
    """The ``[start, end)`` token positions of ``subject`` in ``model.to_tokens(prompt)``.

    Args:
        model: a model with a fast tokenizer (any ``TransformerBridge``).
        prompt: the text the model reads.
        subject: a substring of ``prompt`` (surrounding whitespace is ignored).
        occurrence: which occurrence when the subject appears more than once: 0 is the
            first, -1 the last (Python indexing).

    Raises:
        SubjectNotFoundError: the subject is not in the prompt; the message shows the
            prompt's tokens.
    """
    needle = subject.strip()
    if not needle:
        raise EmptyInputError("the subject is empty; pass the subject's text, e.g. 'Eiffel Tower'")
    ids, offsets = _encode(model, prompt)
    shift = prompt_offset(model, prompt)[1]
    starts = []
    i = prompt.find(needle)
    while i != -1:
        starts.append(i)
        i = prompt.find(needle, i + 1)
    if not starts:
        hint = ""
        if needle.lower() in prompt.lower():
            hint = " It occurs with different capitalization; pass it exactly as in the prompt."
        raise SubjectNotFoundError(
            f"subject {needle!r} does not occur in the prompt {prompt!r}.{hint}\n"
            f"Prompt tokens: {_str_tokens(model, ids)}"
        )
    try:
        c0 = starts[occurrence]
    except IndexError:
        raise ArgumentError(
            f"occurrence={occurrence} but subject {needle!r} occurs {len(starts)} time(s) "
            f"in {prompt!r} (at characters {starts})"
        ) from None
    c1 = c0 + len(needle)
    inside = [t for t, (s, e) in enumerate(offsets) if e > s and s < c1 and e > c0]
    return inside[0] + shift, inside[-1] + 1 + shift


@checked
def answer_tokens(model: TokenizingModel, answer: str) -> tuple[int, ...]:
    """The token ids of ``answer`` as it follows a prompt: with one leading space.

    An answer that already starts with whitespace keeps it; otherwise a space is prepended,
    because in the prompts mechlin scores ("...in the city of") the answer is the next word.
    """
    if not answer.strip():
        raise EmptyInputError("the answer is empty; pass the answer's text, e.g. 'Paris'")
    text = answer if answer[0].isspace() else " " + answer
    ids, _ = _encode(model, text)
    return tuple(ids)


@checked
def answer_token(
    model: TokenizingModel,
    answer: str,
    *,
    multi_token: Literal["error", "first"] = "error",
) -> int:
    """The single token id of ``answer`` (with its leading space).

    Args:
        multi_token: what to do when the answer is several tokens: ``"error"`` raises
            ``MultiTokenAnswerError``; ``"first"`` returns the first token, and the caller
            must report that it scored only the first token.
    """
    ids = answer_tokens(model, answer)
    if len(ids) > 1 and multi_token == "error":
        pieces = _str_tokens(model, list(ids))
        raise MultiTokenAnswerError(
            f"answer {answer!r} is {len(ids)} tokens {pieces}, but this scores a single token. "
            f"Pass a one-token answer, or multi_token='first' to score its first token "
            f"{pieces[0]!r}."
        )
    return ids[0]
