"""Labelled feature datasets for sparse probing (Gurnee et al. 2023), from real text shipped here.

Sparse probing asks which few neurons of a layer linearly predict a feature. Its inputs are
texts with a label each, and a rule that pools a neuron's activations over a text into one
number. Gurnee et al. ("Finding Neurons in a Haystack", 2023) pool by the kind of feature: the
*mean* over the text for context features (which language a text is in), the *max* for facts
about an entity (is this country in Europe), and the activation at *one token* for token-level
features (a compound word, a property of the token, its position). Every `FeatureDataset` says
its pooling.

Token-level features are stored as prefixes that end at the target token, with pooling
``"last"``. For a causal language model the activation at the last token of a prefix equals the
activation at that position in the full text, so every feature is read with a single rule. Two
pitfalls follow:

- Labels describe *words* (a compound) or *model tokens* (a text property, a position). A word
  may be several tokens; the last token of a prefix is then the last token of its last word.
- A prefix is re-tokenized on its own. Builders that depend on a tokenizer keep a prefix only
  if its re-tokenization ends with the same token as the full text (and, for ``position``, has
  the same length). The rest are left out and counted in ``FeatureDataset.n_dropped``.

All text comes from ``mechlin/datasets/data/features/`` (written by
``scripts/build_feature_data.py`` from ``../shared/data``): Europarl sentences in 11 languages
(Koehn; no known copyright restrictions; the NLTK sample), de-tokenized into natural text by the
build script, and paragraphs and sentences of eight public-domain Gutenberg novels (via NLTK).
Country facts come from ``mechlin.datasets.countries``.

Example:
    >>> ds = country_in_europe()
    >>> ds.classes, ds.pooling, sum(ds.class_balance().values()) == len(ds)
    (('not in Europe', 'in Europe'), 'max', True)
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Int
from torch import Tensor

from mechlin.datasets.countries import load_countries
from mechlin.errors import (
    ArgumentError,
    BigramNotFoundError,
    EmptyInputError,
    OutOfRangeError,
)
from mechlin.results import Result
from mechlin.tokens import encode_with_offsets

Pooling = Literal["mean", "max", "last"]
TextProperty = Literal["digit", "capital", "leading_space", "punctuation"]

LANGUAGES: dict[str, str] = {
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "it": "Italian",
    "nl": "Dutch",
    "pt": "Portuguese",
    "sv": "Swedish",
}
"""The Europarl languages: class names of ``language_identity`` are these ISO 639-1 codes."""

COMPOUND_BIGRAMS: tuple[str, ...] = (
    "great deal",
    "of course",
    "at least",
    "no doubt",
    "each other",
    "young man",
    "first time",
    "sperm whale",
    "Frank Churchill",
    "Father Brown",
)
"""Bigrams with at least 47 positives and 19 negatives of each kind in the shipped sample."""

TEXT_PROPERTIES: tuple[TextProperty, ...] = ("digit", "capital", "leading_space", "punctuation")

_DATA = "data/features"
_EUROPARL = "Europarl (Koehn), no known copyright restrictions; NLTK sample"
_GUTENBERG = "Project Gutenberg via NLTK, public domain"


@runtime_checkable
class FastTokenizer(Protocol):
    """What the token-level builders need: a Hugging Face *fast* tokenizer (character offsets)."""

    is_fast: bool

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class FeatureDataset(Result):
    """Texts with one class label each, and the pooling rule that reads the feature from them.

    Binary features have ``classes == (negative_name, positive_name)``: the positive class is 1.
    Token-level features are prefixes ending at the target token (pooling ``"last"``).
    """

    name: str
    texts: tuple[str, ...]  # one example per text
    labels: Int[Tensor, " example"]  # int64 index into `classes`
    classes: tuple[str, ...]
    pooling: Pooling
    groups: Int[Tensor, " example"] | None  # source document / sentence ids, for grouped splits
    source: str  # provenance and licence, one line
    notes: tuple[str, ...] = ()  # per-example sub-kind (empty, or one per example)
    n_dropped: int = 0  # candidates the builder left out (prefix re-tokenized differently)

    def __post_init__(self) -> None:
        n = len(self.texts)
        if n == 0:
            raise EmptyInputError(f"feature dataset {self.name!r} has no examples")
        empty = [i for i, t in enumerate(self.texts) if not t.strip()]
        if empty:
            raise EmptyInputError(
                f"feature dataset {self.name!r}: texts {empty[:5]} are empty; drop them"
            )
        if self.pooling not in ("mean", "max", "last"):
            raise ArgumentError(f"pooling must be 'mean', 'max' or 'last', not {self.pooling!r}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ArgumentError(f"classes must be at least two distinct names, got {self.classes}")
        for field_name, tensor in (("labels", self.labels), ("groups", self.groups)):
            if tensor is None:
                continue
            if tensor.dtype != torch.long or tensor.ndim != 1 or len(tensor) != n:
                raise ArgumentError(
                    f"{field_name} must be a 1-D int64 tensor with one entry per text ({n}); "
                    f"got dtype {tensor.dtype}, shape {tuple(tensor.shape)}"
                )
        bad = (self.labels < 0) | (self.labels >= len(self.classes))
        if bool(bad.any()):
            raise ArgumentError(
                f"labels must index `classes` (0..{len(self.classes) - 1}); "
                f"found {sorted(set(self.labels[bad].tolist()))[:5]}"
            )
        if self.notes and len(self.notes) != n:
            raise ArgumentError(f"notes must be empty or one per text ({n}), got {len(self.notes)}")
        if self.n_dropped < 0:
            raise ArgumentError(f"n_dropped must be >= 0, got {self.n_dropped}")

    def __len__(self) -> int:
        return len(self.texts)

    def class_balance(self) -> dict[str, int]:
        """How many examples each class has, in the order of ``classes``."""
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts, strict=True))

    def subset(self, indices: Sequence[int] | Int[Tensor, " k"]) -> FeatureDataset:
        """The examples at ``indices`` (in that order), with their labels, groups and notes."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if len(idx) and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise OutOfRangeError(
                f"indices must lie in [0, {len(self)}), got {idx.tolist()[:5]}..."
            )
        rows = idx.tolist()
        return FeatureDataset(
            name=self.name,
            texts=tuple(self.texts[i] for i in rows),
            labels=self.labels[idx],
            classes=self.classes,
            pooling=self.pooling,
            groups=None if self.groups is None else self.groups[idx],
            source=self.source,
            notes=tuple(self.notes[i] for i in rows) if self.notes else (),
            n_dropped=self.n_dropped,
        )

    def one_vs_rest(self, positive: str) -> FeatureDataset:
        """A binary view with classes ``("not <positive>", positive)``, named ``name:positive``."""
        if positive not in self.classes:
            raise ArgumentError(f"{positive!r} is not a class of {self.name!r}: {self.classes}")
        labels = (self.labels == self.classes.index(positive)).long()
        return FeatureDataset(
            name=f"{self.name}:{positive}",
            texts=self.texts,
            labels=labels,
            classes=(f"not {positive}", positive),
            pooling=self.pooling,
            groups=self.groups,
            source=self.source,
            notes=self.notes,
            n_dropped=self.n_dropped,
        )

    def balanced(self, n_per_class: int, *, seed: int = 0) -> FeatureDataset:
        """At most ``n_per_class`` random examples of each class (same seed, same subset).

        The kept examples stay in their original order. A class with fewer examples keeps all.
        """
        if n_per_class < 1:
            raise ArgumentError(f"n_per_class must be >= 1, got {n_per_class}")
        gen = torch.Generator().manual_seed(seed)
        keep = []
        for c in range(len(self.classes)):
            members = torch.nonzero(self.labels == c).flatten()
            keep.append(members[torch.randperm(len(members), generator=gen)[:n_per_class]])
        return self.subset(torch.cat(keep).sort().values)

    def __repr__(self) -> str:
        balance = ", ".join(f"{k}={v}" for k, v in self.class_balance().items())
        dropped = f", {self.n_dropped} dropped" if self.n_dropped else ""
        return (
            f"FeatureDataset({self.name!r}, n={len(self)}, pooling={self.pooling!r}, "
            f"balance: {balance}{dropped})"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>"
            for k, v in self.class_balance().items()
        )
        examples = "".join(
            f"<li>[{html.escape(self.classes[int(y)])}] {html.escape(t[-120:])}</li>"
            for t, y in zip(self.texts[:3], self.labels[:3].tolist(), strict=True)
        )
        return (
            f"<b>{html.escape(self.name)}</b>: {len(self)} examples, pooling "
            f"<code>{self.pooling}</code>, {self.n_dropped} dropped<br>"
            f"<table><tr><th>class</th><th>n</th></tr>{rows}</table>"
            f"<ul>{examples}</ul><small>{html.escape(self.source)}</small>"
        )


# ---------------------------------------------------------------------------- shipped data


def _read_jsonl(name: str) -> tuple[dict[str, Any], ...]:
    text = files("mechlin.datasets").joinpath(f"{_DATA}/{name}").read_text("utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line)


@lru_cache(maxsize=16)
def _europarl(lang: str) -> tuple[dict[str, Any], ...]:
    """``{"line", "text"}`` records: de-tokenized sentences, ``line`` their source line."""
    return _read_jsonl(f"europarl/{lang}.jsonl")


@lru_cache(maxsize=1)
def _broad() -> tuple[dict[str, Any], ...]:
    """``{"book", "text"}`` Gutenberg prose paragraphs, interleaved across books."""
    return _read_jsonl("gutenberg_broad.jsonl")


@lru_cache(maxsize=1)
def _compound_sentences() -> tuple[dict[str, Any], ...]:
    """``{"id", "book", "text"}`` Gutenberg sentences holding a word of a chosen bigram."""
    return _read_jsonl("gutenberg_compounds.jsonl")


def _spread(items: Sequence[Any], k: int) -> list[Any]:
    """``k`` items evenly spaced through ``items`` (all of them if there are no more)."""
    if k >= len(items):
        return list(items)
    return [items[(2 * i + 1) * len(items) // (2 * k)] for i in range(k)]


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ArgumentError(f"{name} must be >= {minimum}, got {value}")


def _prefix(text: str, end: int, context_words: int) -> str:
    """``text[:end]`` with its left context cut to ``context_words`` words before the last."""
    starts = [m.start() for m in re.finditer(r"\S+", text[:end])]
    if not starts:
        return text[:end]
    return text[starts[max(0, len(starts) - 1 - context_words)] : end]


# ------------------------------------------------------------------------------- builders


def language_identity(
    *, n_per_language: int = 200, languages: Sequence[str] | None = None
) -> FeatureDataset:
    """Which language a Europarl sentence is in: one class per language code (mean pooling).

    Sentences are spread evenly through the shipped 300 per language. ``groups`` are blocks of
    200 consecutive source lines (one stretch of debate) per language, for grouped splits.
    """
    langs = tuple(LANGUAGES) if languages is None else tuple(languages)
    if not langs:
        raise EmptyInputError(f"no languages given; choose from {sorted(LANGUAGES)}")
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown:
        raise ArgumentError(f"unknown languages {unknown}; Europarl has {sorted(LANGUAGES)}")
    if len(set(langs)) != len(langs):
        raise ArgumentError(f"languages repeat: {langs}")
    _check_count("n_per_language", n_per_language)
    texts: list[str] = []
    labels: list[int] = []
    groups: list[int] = []
    for c, lang in enumerate(langs):
        records = _europarl(lang)
        if n_per_language > len(records):
            raise ArgumentError(
                f"n_per_language={n_per_language}, but {len(records)} {lang} sentences are "
                "shipped (rebuild with scripts/build_feature_data.py for more)"
            )
        for r in _spread(records, n_per_language):
            texts.append(r["text"])
            labels.append(c)
            groups.append(list(LANGUAGES).index(lang) * 1000 + r["line"] // 200)
    return FeatureDataset(
        name="language",
        texts=tuple(texts),
        labels=torch.tensor(labels),
        classes=langs,
        pooling="mean",
        groups=torch.tensor(groups),
        source=f"{_EUROPARL}; mechlin/datasets/data/features/europarl",
    )


@lru_cache(maxsize=64)
def _bigram_patterns(bigram: str) -> tuple[str, str, tuple[re.Pattern[str], ...]]:
    """The bigram's words and its patterns: positive, second word, first word, and the checks
    that the first word comes right before / the second right after (any case, any
    punctuation between)."""
    words = bigram.split(" ")
    if len(words) != 2 or not all(words):
        raise ArgumentError(f"a bigram is two words separated by one space, got {bigram!r}")
    first, second = (re.escape(w) for w in words)
    # A whole word: no letter or digit next to it, nor a hyphen joining it to one
    # ("sperm-whale" is neither "sperm" nor "whale"; "taste.--At" is "At").
    start, stop = r"(?<!\w)(?<!\w-)", r"(?!\w)(?!-\w)"
    return (
        words[0],
        words[1],
        (
            re.compile(rf"{start}{first} {second}{stop}"),
            re.compile(rf"{start}{second}{stop}"),
            re.compile(rf"{start}{first}{stop}"),
            re.compile(rf"(?i)(?<!\w){first}[\W_]*\Z"),
            re.compile(rf"(?i)[\W_]*{second}(?!\w)"),
        ),
    )


def bigram_occurrences(sentence: str, bigram: str) -> list[tuple[str, int]]:
    """Every labelled occurrence of a bigram's words in a sentence, as ``(kind, end)``.

    ``kind`` is ``"positive"`` (``"first second"``: both whole words, case-sensitive, one
    space between), ``"second_only"`` (the second word, the preceding word not the first) or
    ``"first_only"`` (the first word, the next word not the second); ``end`` is the character
    index just after the word the prefix ends with. Matches are case-sensitive, but a negative
    is rejected if the other word is there in any case or across punctuation ("Of course",
    "great, deal"): such occurrences are neither positive nor negative.

    >>> bigram_occurrences("a great deal, a deal, a great man", "great deal")
    [('positive', 12), ('second_only', 20), ('first_only', 29)]
    """
    first, second, (both, second_re, first_re, before, after) = _bigram_patterns(bigram)
    if first not in sentence and second not in sentence:
        return []
    out = [("positive", m.end()) for m in both.finditer(sentence)]
    for m in second_re.finditer(sentence):
        if not before.search(sentence, 0, m.start()):
            out.append(("second_only", m.end()))
    for m in first_re.finditer(sentence):
        if not after.match(sentence, m.end()):
            out.append(("first_only", m.end()))
    return out


def compound_words(
    *,
    bigrams: Sequence[str] | None = None,
    n_per_class: int = 50,
    context_words: int = 30,
) -> dict[str, FeatureDataset]:
    """One binary dataset per bigram (keyed by bigram) from Gutenberg prose; pooling "last".

    Positives are sentence prefixes ending right after ``"first second"``; negatives end after
    the second word not preceded by the first (note ``"second_only"``) or after the first word
    not followed by the second (``"first_only"``), half of each where there are enough. Each
    prefix keeps at most ``context_words`` words before its last word. Examples are spread
    evenly through the corpus; ``groups`` are source-sentence ids. See ``bigram_occurrences``
    for the word-matching rules.
    """
    chosen = COMPOUND_BIGRAMS if bigrams is None else tuple(bigrams)
    if not chosen:
        raise EmptyInputError(f"no bigrams given; e.g. {COMPOUND_BIGRAMS}")
    _check_count("n_per_class", n_per_class)
    _check_count("context_words", context_words)
    sentences = _compound_sentences()
    out = {}
    for bigram in chosen:
        found: dict[str, list[tuple[str, int]]] = {
            "positive": [],
            "second_only": [],
            "first_only": [],
        }
        seen: set[str] = set()
        for s in sentences:
            for kind, end in bigram_occurrences(s["text"], bigram):
                text = _prefix(s["text"], end, context_words)
                if text not in seen:
                    seen.add(text)
                    found[kind].append((text, s["id"]))
        counts = {k: len(v) for k, v in found.items()}
        if not counts["positive"] or not (counts["first_only"] + counts["second_only"]):
            raise BigramNotFoundError(
                f"bigram {bigram!r} is not found in the shipped Gutenberg sample "
                "(mechlin/datasets/data/features/gutenberg_compounds.jsonl; "
                "case-sensitive whole words) "
                f"with both positive and negative occurrences: found {counts}. Choose from "
                f"{COMPOUND_BIGRAMS}, or add it to scripts/build_feature_data.py and rebuild"
            )
        n_second = min(
            counts["second_only"], max(n_per_class // 2, n_per_class - counts["first_only"])
        )
        quota = {
            "positive": n_per_class,
            "second_only": n_second,
            "first_only": min(counts["first_only"], n_per_class - n_second),
        }
        picked = [(kind, item) for kind, k in quota.items() for item in _spread(found[kind], k)]
        out[bigram] = FeatureDataset(
            name=f"compound:{bigram}",
            texts=tuple(text for _, (text, _) in picked),
            labels=torch.tensor([int(kind == "positive") for kind, _ in picked]),
            classes=(f"not {bigram}", bigram),
            pooling="last",
            groups=torch.tensor([sid for _, (_, sid) in picked]),
            source=f"{_GUTENBERG}; mechlin/datasets/data/features/gutenberg_compounds.jsonl",
            notes=tuple(kind for kind, _ in picked),
        )
    return out


_PROPERTIES: dict[str, Callable[[str], bool]] = {
    "digit": lambda t: any(c.isdigit() for c in t),
    "capital": lambda t: t.lstrip()[:1].isupper(),
    "leading_space": lambda t: t.startswith(" "),
    "punctuation": lambda t: (
        bool(t.strip()) and all(unicodedata.category(c)[0] in "PS" for c in t.strip())
    ),
}


def token_has_property(token_text: str, prop: TextProperty) -> bool:
    """Whether a token's text has a property (the text includes the token's leading space).

    ``digit``: contains a digit; ``capital``: its first non-space character is uppercase;
    ``leading_space``: starts with a space; ``punctuation``: nothing but punctuation or symbols
    (Unicode categories P* and S*) once spaces are stripped.

    >>> [token_has_property(" The", p) for p in TEXT_PROPERTIES]
    [False, True, True, False]
    """
    if prop not in _PROPERTIES:
        raise ArgumentError(f"unknown text property {prop!r}; known: {TEXT_PROPERTIES}")
    return _PROPERTIES[prop](token_text)


_Encoded = tuple[list[int], list[str], list[int]]  # token ids, token texts, character ends


def _encode(tokenizer: FastTokenizer, texts: list[str]) -> list[_Encoded]:
    """Token ids of each text (no special tokens), each token's text, and its end offset.

    A token's text runs from the end of the previous token that ends earlier, so the space a
    byte-level or SentencePiece token absorbs is part of it, and the byte tokens of one
    character all get that character.
    """
    out = []
    for text, (ids, offsets) in zip(texts, encode_with_offsets(tokenizer, texts), strict=True):
        pieces, ends, prev_end, cur_end = [], [], 0, 0
        for _, end in offsets:
            if end > cur_end:
                prev_end, cur_end = cur_end, end
            pieces.append(text[prev_end:end])
            ends.append(end)
        out.append((list(ids), pieces, ends))
    return out


def _sample_prefixes(
    tokenizer: FastTokenizer,
    texts: list[str],
    encoded: list[_Encoded],
    candidates: list[tuple[int, int]],
    n: int,
    *,
    context_words: int | None,
    accept: Callable[[_Encoded, int], bool],
    seed: int,
) -> tuple[list[tuple[int, int, str]], int]:
    """Up to ``n`` random candidates ``(text_idx, token_idx)`` whose prefix passes the checks.

    A candidate's prefix is its text up to the token's end (left context cut to
    ``context_words`` words, or none if None). It is kept if it re-tokenizes to end with the
    same token id and ``accept(prefix_encoding, token_idx)`` holds. Returns the kept
    ``(text_idx, token_idx, prefix)`` and how many sampled candidates were dropped.
    """
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))
    kept: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    dropped = cursor = 0
    while len(kept) < n and cursor < len(order):
        chunk = [candidates[i] for i in order[cursor : cursor + 2 * (n - len(kept)) + 8].tolist()]
        cursor += len(chunk)
        prefixes = []
        for t, j in chunk:
            end = encoded[t][2][j]
            prefixes.append(
                texts[t][:end] if context_words is None else _prefix(texts[t], end, context_words)
            )
        for (t, j), prefix, enc in zip(chunk, prefixes, _encode(tokenizer, prefixes), strict=True):
            if len(kept) == n or prefix in seen:
                continue
            if enc[0] and enc[0][-1] == encoded[t][0][j] and accept(enc, j):
                kept.append((t, j, prefix))
                seen.add(prefix)
            else:
                dropped += 1
    return kept, dropped


def _last_token_is(has: Callable[[str], bool], label: bool) -> Callable[[_Encoded, int], bool]:
    return lambda enc, _j: has(enc[1][-1]) == label


def _property_sources() -> tuple[list[str], list[str]]:
    """Texts for token-level properties, and their sources: Gutenberg prose, English Europarl."""
    broad, english = _broad(), _europarl("en")
    texts = [r["text"] for r in broad] + [r["text"] for r in english]
    return texts, ["gutenberg"] * len(broad) + ["europarl"] * len(english)


def text_properties(
    tokenizer: FastTokenizer,
    *,
    n_per_class: int = 100,
    properties: Sequence[TextProperty] = TEXT_PROPERTIES,
    context_words: int = 30,
    seed: int = 0,
) -> dict[str, FeatureDataset]:
    """Properties of the model's own tokens, one binary dataset per property (pooling "last").

    Each example is a prefix of a Gutenberg paragraph or an English Europarl sentence that ends
    at a token end, with at most ``context_words`` words before its last word; the label is
    whether that last token has the property (see ``token_has_property``). Positives are drawn
    at random; negatives are drawn from each source in the positives' proportions, so a
    property commoner in one source (digits, in Europarl) is not confounded with the source.
    ``notes`` name each example's source; ``groups`` its source text. A prefix is kept only if
    it re-tokenizes to end with the same token, still having the label; the rest are counted
    in ``n_dropped``.
    """
    if not properties:
        raise EmptyInputError(f"no properties given; choose from {TEXT_PROPERTIES}")
    for prop in properties:
        if prop not in _PROPERTIES:
            raise ArgumentError(f"unknown text property {prop!r}; known: {TEXT_PROPERTIES}")
    _check_count("n_per_class", n_per_class)
    _check_count("context_words", context_words)
    texts, kinds = _property_sources()
    encoded = _encode(tokenizer, texts)
    out: dict[str, FeatureDataset] = {}
    for p_idx, prop in enumerate(properties):
        has = _PROPERTIES[prop]
        pools: dict[tuple[bool, str], list[tuple[int, int]]] = {}
        for t, (_, pieces, _) in enumerate(encoded):
            for j, piece in enumerate(pieces):
                pools.setdefault((has(piece), kinds[t]), []).append((t, j))
        positives = pools.get((True, "gutenberg"), []) + pools.get((True, "europarl"), [])
        if not positives:
            raise ArgumentError(f"no token of the shipped text has the property {prop!r}")
        kept, dropped = _sample_prefixes(
            tokenizer,
            texts,
            encoded,
            positives,
            n_per_class,
            context_words=context_words,
            accept=_last_token_is(has, True),
            seed=seed + 3 * p_idx,
        )
        picked = [(t, prefix, 1) for t, _, prefix in kept]
        for s_idx, source in enumerate(("gutenberg", "europarl")):
            negatives, d = _sample_prefixes(
                tokenizer,
                texts,
                encoded,
                pools.get((False, source), []),
                sum(kinds[t] == source for t, _, _ in kept),
                context_words=context_words,
                accept=_last_token_is(has, False),
                seed=seed + 3 * p_idx + 1 + s_idx,
            )
            dropped += d
            picked += [(t, prefix, 0) for t, _, prefix in negatives]
        out[prop] = FeatureDataset(
            name=prop,
            texts=tuple(prefix for _, prefix, _ in picked),
            labels=torch.tensor([y for _, _, y in picked]),
            classes=(f"not {prop}", prop),
            pooling="last",
            groups=torch.tensor([t for t, _, _ in picked]),
            source=f"{_GUTENBERG}; {_EUROPARL}; mechlin/datasets/data/features",
            notes=tuple(kinds[t] for t, _, _ in picked),
            n_dropped=dropped,
        )
    return out


def position(
    tokenizer: FastTokenizer, *, n_per_class: int = 200, boundary: int = 20, seed: int = 0
) -> FeatureDataset:
    """Whether the last token of a prefix sits at position ``>= boundary`` (pooling "last").

    A position counts the prefix's tokens without BOS from 0: the last token of a prefix of
    ``n`` tokens has position ``n - 1`` (add 1 for a model that prepends BOS). Prefixes start
    at the beginning of a Gutenberg paragraph (at least ``2 * boundary`` tokens long) and end
    at a random position below ``2 * boundary``, so each paragraph gives both classes (grouped
    by paragraph). ``notes`` hold the position (``"position=17"``). A prefix is kept only if
    it re-tokenizes to exactly its tokens in the paragraph; the rest count in ``n_dropped``.
    """
    _check_count("n_per_class", n_per_class)
    _check_count("boundary", boundary)
    texts = [r["text"] for r in _broad()]
    encoded = _encode(tokenizer, texts)
    long_enough = [t for t, enc in enumerate(encoded) if len(enc[0]) >= 2 * boundary]
    if not long_enough:
        raise ArgumentError(
            f"no shipped paragraph has {2 * boundary} tokens with this tokenizer; "
            "use a smaller boundary"
        )
    picked: list[tuple[int, int, str]] = []
    dropped = 0
    for label, positions in enumerate((range(boundary), range(boundary, 2 * boundary))):
        kept, d = _sample_prefixes(
            tokenizer,
            texts,
            encoded,
            [(t, j) for t in long_enough for j in positions],
            n_per_class,
            context_words=None,
            accept=lambda enc, j: len(enc[0]) == j + 1,
            seed=seed + label,
        )
        dropped += d
        picked += kept
    return FeatureDataset(
        name="position",
        texts=tuple(prefix for _, _, prefix in picked),
        labels=torch.tensor([int(j >= boundary) for _, j, _ in picked]),
        classes=(f"position < {boundary}", f"position >= {boundary}"),
        pooling="last",
        groups=torch.tensor([t for t, _, _ in picked]),
        source=f"{_GUTENBERG}; mechlin/datasets/data/features/gutenberg_broad.jsonl",
        notes=tuple(f"position={j}" for _, j, _ in picked),
        n_dropped=dropped,
    )


def country_in_europe(*, template: str | Sequence[str] = "{name}") -> FeatureDataset:
    """Whether a country is in Europe, from ``mechlin.datasets.countries`` (binary, pooling "max").

    Each country's name is put in each ``template`` (``"{name}"`` alone by default: max
    pooling over shared template words would mix them into every example). ``groups`` are
    country indices, so all templates of a country fall on one side of a grouped split;
    ``notes`` hold the country's region. Of the 250 countries, 54 are in Europe.
    """
    templates = (template,) if isinstance(template, str) else tuple(template)
    if not templates:
        raise EmptyInputError("no template given; use e.g. '{name}'")
    for tpl in templates:
        if "{name}" not in tpl:
            raise ArgumentError(f"each template must contain '{{name}}', got {tpl!r}")
    countries = load_countries()
    rows = [(i, c, tpl) for i, c in enumerate(countries) for tpl in templates]
    return FeatureDataset(
        name="country_in_europe",
        texts=tuple(tpl.format(name=c["name"]) for _, c, tpl in rows),
        labels=torch.tensor([int(c["region"] == "Europe") for _, c, _ in rows]),
        classes=("not in Europe", "in Europe"),
        pooling="max",
        groups=torch.tensor([i for i, _, _ in rows]),
        source="countryinfo 1.0.1 (MIT) via mechlin/datasets/data/countries.json",
        notes=tuple(c["region"] for _, c, _ in rows),
    )


def broad_text(*, n: int = 300) -> tuple[str, ...]:
    """``n`` broad prose paragraphs (40-150 words), taken in turn from eight Gutenberg novels.

    For checking a candidate neuron's activations outside its feature.
    """
    _check_count("n", n)
    paragraphs = _broad()
    if n > len(paragraphs):
        raise ArgumentError(f"n={n}, but {len(paragraphs)} paragraphs are shipped")
    return tuple(r["text"] for r in paragraphs[:n])


def feature_datasets(tokenizer: FastTokenizer) -> dict[str, FeatureDataset]:
    """Every feature dataset with default options, keyed by its ``name``.

    ``"language"`` (one multiclass dataset), ``"compound:<bigram>"`` for each of
    ``COMPOUND_BIGRAMS``, the ``TEXT_PROPERTIES``, ``"position"`` and ``"country_in_europe"``.
    """
    out = {"language": language_identity()}
    out.update({ds.name: ds for ds in compound_words().values()})
    out.update(text_properties(tokenizer))
    out["position"] = position(tokenizer)
    out["country_in_europe"] = country_in_europe()
    return out
