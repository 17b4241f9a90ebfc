"""Feature datasets for sparse probing: labels checked against the texts, views, errors, data."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest
import torch

from mechlin.datasets.features import (
    COMPOUND_BIGRAMS,
    LANGUAGES,
    TEXT_PROPERTIES,
    BigramNotFoundError,
    FeatureDataset,
    _compound_sentences,
    _encode,
    _sample_prefixes,
    broad_text,
    compound_words,
    country_in_europe,
    feature_datasets,
    language_identity,
    position,
    text_properties,
)
from mechlin.errors import EmptyInputError
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "mechlin" / "datasets" / "data" / "features"


@pytest.fixture(scope="module")
def tiny_datasets(tiny: Any) -> dict[str, FeatureDataset]:
    return feature_datasets(tiny.tokenizer)


def _toy(y: list[int], **kwargs: Any) -> FeatureDataset:
    fields: dict[str, Any] = {
        "name": "toy",
        "texts": tuple(f"text {i}" for i in range(len(y))),
        "labels": torch.tensor(y, dtype=torch.long),
        "classes": ("a", "b", "c"),
        "pooling": "mean",
        "groups": torch.arange(len(y)) // 2,
        "source": "made up",
        "notes": tuple(f"note {i}" for i in range(len(y))),
    }
    return FeatureDataset(**(fields | kwargs))


# ---------------------------------------------------------------- every builder, both classes


def test_every_builder_gives_every_class(tiny_datasets: dict[str, FeatureDataset]) -> None:
    expected = {"language", "position", "country_in_europe", *TEXT_PROPERTIES}
    expected |= {f"compound:{b}" for b in COMPOUND_BIGRAMS}
    assert set(tiny_datasets) == expected
    for key, ds in tiny_datasets.items():
        assert ds.name == key
        balance = ds.class_balance()
        assert list(balance) == list(ds.classes)
        assert sum(balance.values()) == len(ds) == len(ds.texts)
        assert min(balance.values()) > 0, (key, balance)
        assert ds.groups is not None and len(ds.groups) == len(ds)
        assert not ds.notes or len(ds.notes) == len(ds)
    assert tiny_datasets["language"].pooling == "mean"
    assert tiny_datasets["country_in_europe"].pooling == "max"
    assert {
        ds.pooling for k, ds in tiny_datasets.items() if k not in ("language", "country_in_europe")
    } == {"last"}


def test_language_identity_reads_natural_sentences() -> None:
    ds = language_identity(n_per_language=50)
    assert ds.classes == tuple(LANGUAGES)
    assert ds.class_balance() == dict.fromkeys(LANGUAGES, 50)
    for text in ds.texts:  # de-tokenized: no space before a comma or a final full stop
        assert " , " not in text and not text.endswith(" .")
    greek = [t for t, y in zip(ds.texts, ds.labels.tolist(), strict=True) if ds.classes[y] == "el"]
    assert all(re.search("[α-ω]", t) for t in greek)
    # Groups never mix languages.
    for g in ds.groups.unique().tolist():
        assert len(ds.labels[ds.groups == g].unique()) == 1
    sub = language_identity(n_per_language=10, languages=("fr", "de"))
    assert sub.classes == ("fr", "de") and len(sub) == 20


# --------------------------------------------------------------------------------- compounds


def test_compound_labels_match_the_words() -> None:
    sentences = _compound_sentences()
    assert [s["id"] for s in sentences] == list(range(len(sentences)))
    for bigram, ds in compound_words().items():
        first, second = (re.escape(w) for w in bigram.split(" "))
        kinds = set()
        for text, label, note, group in zip(
            ds.texts, ds.labels.tolist(), ds.notes, ds.groups.tolist(), strict=True
        ):
            kinds.add(note)
            sentence = sentences[group]["text"]
            start = sentence.find(text)
            assert start >= 0, (bigram, text)
            rest = sentence[start + len(text) :]
            assert not re.match(r"\w|-\w", rest), "the prefix ends inside a word"
            assert label == (note == "positive")
            if note == "positive":
                assert re.search(rf"(?<!\w)(?<!\w-){first} {second}\Z", text), text
            elif note == "second_only":
                assert re.search(rf"(?<!\w)(?<!\w-){second}\Z", text), text
                assert not re.search(rf"(?i)(?<!\w){first}[\W_]*{second}\Z", text), text
            else:
                assert note == "first_only"
                assert re.search(rf"(?<!\w)(?<!\w-){first}\Z", text), text
                assert not re.match(rf"(?i)[\W_]*{second}(?!\w)", rest), (text, rest)
            assert len(text.split()) <= 31  # 30 words of context and the last word
        assert kinds == {"positive", "first_only", "second_only"}, bigram
        assert ds.class_balance()[bigram] >= 40


def test_compound_context_words_bounds_the_prefix() -> None:
    ds = compound_words(bigrams=["sperm whale"], n_per_class=10, context_words=1)["sperm whale"]
    assert all(len(t.split()) <= 2 for t in ds.texts)
    assert all(
        t.endswith("sperm whale") for t, y in zip(ds.texts, ds.labels, strict=True) if y == 1
    )


# ------------------------------------------------------------------------- token-level features


def _last_token_text(tokenizer: Any, text: str) -> str:
    """The last token's text by decoding (not from offsets): text after the decoded rest."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for k in range(1, len(ids) + 1):  # back off over the byte tokens of one character
        head = tokenizer.decode(ids[:-k], clean_up_tokenization_spaces=False)
        if text.startswith(head):
            return text[len(head) :]
    raise AssertionError(f"no decoded head of {ids} is a prefix of {text!r}")


def _expected(prop: str, token: str) -> bool:
    stripped = token.strip()
    return {
        "digit": bool(re.search(r"\d", token)),
        "capital": bool(stripped) and stripped[0] != stripped[0].lower(),
        "leading_space": token[:1] == " ",
        "punctuation": bool(stripped) and not any(c.isalnum() or c.isspace() for c in stripped),
    }[prop]


def _check_token_features(
    tokenizer: Any, props: dict[str, FeatureDataset], pos: FeatureDataset
) -> None:
    for prop, ds in props.items():
        for text, label in zip(ds.texts, ds.labels.tolist(), strict=True):
            token = _last_token_text(tokenizer, text)
            assert _expected(prop, token) == bool(label), (prop, text[-40:], token)
        # Negatives come from each source in the positives' proportions.
        pairs = list(zip(ds.notes, ds.labels.tolist(), strict=True))
        for source in ("gutenberg", "europarl"):
            assert pairs.count((source, 0)) == pairs.count((source, 1)), (prop, source)
    paragraphs = broad_text(n=304)
    for text, label, note, group in zip(
        pos.texts, pos.labels.tolist(), pos.notes, pos.groups.tolist(), strict=True
    ):
        n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        assert note == f"position={n_tokens - 1}"
        assert label == (n_tokens - 1 >= 20)
        assert paragraphs[group].startswith(text)


def test_token_features_match_the_tiny_tokenizer(tiny: Any) -> None:
    props = text_properties(tiny.tokenizer, n_per_class=60)
    _check_token_features(tiny.tokenizer, props, position(tiny.tokenizer, n_per_class=60))
    assert props["digit"].class_balance() == {"not digit": 60, "digit": 60}


@pytest.mark.bundled
def test_token_features_match_smollm2(smollm2: Any) -> None:
    props = text_properties(smollm2.tokenizer)
    _check_token_features(smollm2.tokenizer, props, position(smollm2.tokenizer))
    for ds in props.values():
        assert min(ds.class_balance().values()) == 100


def test_prefixes_that_retokenize_differently_are_dropped_and_counted(tiny: Any) -> None:
    # The tiny tokenizer spells "é" as two byte tokens ending at the same character: a prefix
    # cut after the first byte re-tokenizes to end with the second, so it must be dropped.
    texts = ["un café noir"]
    encoded = _encode(tiny.tokenizer, texts)
    ends = encoded[0][2]
    shared = [j for j in range(len(ends) - 1) if ends[j] == ends[j + 1]]
    assert len(shared) == 1
    candidates = [(0, j) for j in range(len(ends))]
    kept, dropped = _sample_prefixes(
        tiny.tokenizer,
        texts,
        encoded,
        candidates,
        len(candidates),
        context_words=30,
        accept=lambda enc, j: True,
        seed=0,
    )
    assert dropped == 1
    assert sorted(j for _, j, _ in kept) == [j for j in range(len(ends)) if j not in shared]
    assert all(prefix == texts[0][: ends[j]] for _, j, prefix in kept)


# ---------------------------------------------------------------------------- facts, broad text


def test_country_in_europe_matches_the_knowledge_base() -> None:
    ds = country_in_europe()
    assert len(ds) == 250 and ds.class_balance() == {"not in Europe": 196, "in Europe": 54}
    assert all(
        (note == "Europe") == bool(y) for note, y in zip(ds.notes, ds.labels.tolist(), strict=True)
    )
    assert ds.texts[ds.texts.index("France")] == "France"
    assert ds.labels[ds.texts.index("France")] == 1 and ds.labels[ds.texts.index("Japan")] == 0
    two = country_in_europe(template=("{name}", "The country of {name}"))
    assert len(two) == 500 and torch.equal(two.groups.bincount(), torch.full((250,), 2))
    assert "The country of France" in two.texts


def test_broad_text_spans_several_books() -> None:
    paragraphs = broad_text(n=16)
    assert len(paragraphs) == 16 and len(set(paragraphs)) == 16
    assert all(40 <= len(p.split()) <= 150 for p in paragraphs)
    assert any("Emma" in p for p in broad_text()) and any("whale" in p for p in broad_text())


# --------------------------------------------------------------------------- dataset views


def test_subset_keeps_rows_together() -> None:
    ds = _toy([0, 1, 2, 0, 1, 2])
    sub = ds.subset([4, 1])
    assert sub.texts == ("text 4", "text 1") and sub.labels.tolist() == [1, 1]
    assert sub.notes == ("note 4", "note 1") and sub.groups.tolist() == [2, 0]
    assert sub.subset(torch.tensor([1])).texts == ("text 1",)


def test_one_vs_rest_relabels() -> None:
    ds = _toy([0, 1, 2, 0, 1, 2])
    b = ds.one_vs_rest("c")
    assert b.classes == ("not c", "c") and b.name == "toy:c"
    assert b.labels.tolist() == [0, 0, 1, 0, 0, 1] and b.texts == ds.texts
    with pytest.raises(ValueError, match="not a class"):
        ds.one_vs_rest("z")


def test_balanced_samples_per_class_deterministically() -> None:
    ds = _toy([0] * 10 + [1] * 3 + [2] * 6)
    b = ds.balanced(4, seed=1)
    assert b.class_balance() == {"a": 4, "b": 3, "c": 4}
    assert b.texts == ds.balanced(4, seed=1).texts
    idx = [ds.texts.index(t) for t in b.texts]
    assert idx == sorted(idx) and [ds.labels[i].item() for i in idx] == b.labels.tolist()
    seeds = {ds.balanced(4, seed=s).texts for s in range(5)}
    assert len(seeds) > 1


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    ds = _toy([0, 1, 2, 2])
    back = FeatureDataset.load(ds.save(tmp_path / "ds.pt"))
    assert back.texts == ds.texts and torch.equal(back.labels, ds.labels)
    assert back.notes == ds.notes and torch.equal(back.groups, ds.groups)
    assert "toy" in repr(back) and "a=1" in repr(back) and "<table>" in back._repr_html_()


# ------------------------------------------------------------------------------------ errors


def test_bad_datasets_are_refused() -> None:
    with pytest.raises(EmptyInputError, match="no examples"):
        _toy([])
    with pytest.raises(ValueError, match="labels must index"):
        _toy([0, 3])
    with pytest.raises(EmptyInputError, match="empty"):
        _toy([0, 1], texts=("a", " "))
    with pytest.raises(ValueError, match="notes"):
        _toy([0, 1], notes=("x",))
    with pytest.raises(ValueError, match="int64"):
        _toy([0, 1], labels=torch.tensor([0, 1], dtype=torch.int32))


def test_bad_builder_arguments_are_refused(tiny: Any) -> None:
    with pytest.raises(ValueError, match="unknown languages"):
        language_identity(languages=["en", "xx"])
    with pytest.raises(ValueError, match="shipped"):
        language_identity(n_per_language=301)
    with pytest.raises(BigramNotFoundError, match="not found"):
        compound_words(bigrams=["purple elephant"])
    with pytest.raises(ValueError, match="two words"):
        compound_words(bigrams=["whale"])
    with pytest.raises((ValueError, TypeError), match="vowel"):
        text_properties(tiny.tokenizer, properties=("vowel",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shipped"):
        broad_text(n=10_000)
    with pytest.raises(ValueError, match="name"):
        country_in_europe(template="a country")

    class SlowTokenizer:
        is_fast = False

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("never called")

    with pytest.raises(ValueError, match="slow tokenizer"):
        position(SlowTokenizer())


# ------------------------------------------------------------------------------ shipped data


def test_shipped_files_are_what_the_build_script_writes(tmp_path: Path) -> None:
    script = runpy.run_path(str(ROOT / "scripts" / "build_feature_data.py"))
    counts = script["build"](SHARED_DATA, tmp_path)
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    shipped = sorted(p.relative_to(SHIPPED) for p in SHIPPED.rglob("*") if p.is_file())
    assert built == shipped and len(counts) == len(built)
    for rel in built:
        assert (tmp_path / rel).read_bytes() == (SHIPPED / rel).read_bytes(), rel
    assert sum((SHIPPED / rel).stat().st_size for rel in shipped) < 2_500_000


def test_detokenize_joins_europarl_punctuation() -> None:
    detok = runpy.run_path(str(ROOT / "scripts" / "build_feature_data.py"))["detokenize"]
    assert (
        detok('I declare , as ( FR ) said : " yes " .', "en") == 'I declare, as (FR) said: "yes".'
    )
    assert detok("this minute ' s silence and the Members ' rights", "en") == (
        "this minute's silence and the Members' rights"
    )
    assert detok("c ' est l' an 2000", "fr") == "c'est l'an 2000"
    assert detok("dell ' Unione , 96 / 35", "it") == "dell'Unione, 96/35"
    assert detok("quinta \xad feira", "pt") == "quinta-feira"
