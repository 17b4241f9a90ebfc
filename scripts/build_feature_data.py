"""Build mechlin/datasets/data/features/ (the sparse-probing feature datasets) from ../shared/data.

Run from the repository root (deterministic: the same input gives the same bytes):
    python scripts/build_feature_data.py [--shared ../shared/data] \
        [--out mechlin/datasets/data/features]

Writes
- ``europarl/<lang>.jsonl``: 300 sentences per language, ``{"line", "text"}``, spread evenly
  over the 4,000 source lines (8-60 words each); ``line`` is the 0-based source line. The
  source is tokenized (spaces around punctuation); ``detokenize`` joins it back into natural
  text here, so the package reads plain sentences.
- ``gutenberg_broad.jsonl``: 38 paragraphs (40-150 words) from each of eight prose books,
  ``{"book", "text"}``, interleaved book by book; hard line breaks joined into spaces.
- ``gutenberg_compounds.jsonl``: ``{"id", "book", "text"}`` sentences (4-80 words) of the same
  books holding an occurrence of a chosen bigram (``mechlin.datasets.features.COMPOUND_BIGRAMS``):
  for each bigram and kind (positive, first_only, second_only) up to 100 sentences, spread
  evenly through the books.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from mechlin.datasets.features import COMPOUND_BIGRAMS, LANGUAGES, bigram_occurrences

ROOT = Path(__file__).resolve().parents[1]
PROSE_BOOKS = (
    "austen-emma",
    "austen-persuasion",
    "austen-sense",
    "carroll-alice",
    "chesterton-ball",
    "chesterton-brown",
    "chesterton-thursday",
    "melville-moby_dick",
)
N_EUROPARL = 300
N_BROAD_PER_BOOK = 38
N_COMPOUND_SENTENCES = 100  # per bigram and kind

_ATTACH_LEFT = {",", ".", ";", ":", "!", "?", "%", ")", "]", "»", "·", "...", "..", "....", "'s"}
_ATTACH_RIGHT = {"(", "[", "«", "¿", "¡"}
_ELIDING = {"fr", "it"}  # "c ' est" -> "c'est", "dell ' Unione" -> "dell'Unione"


def detokenize(line: str, lang: str) -> str:
    """Join a tokenized Europarl line back into natural text (a heuristic, language-aware).

    >>> detokenize("the Commission ' s view , as ( FR ) said : \\" yes \\" .", "en")
    'the Commission\\'s view, as (FR) said: "yes".'
    """
    toks = line.split()
    out: list[str] = []
    glue_next = False
    open_quote = {'"': False, "'": False}
    for i, tok in enumerate(toks):
        prev = toks[i - 1] if i else ""
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        glue, glue_next = glue_next, False
        if tok == "\xad":  # a soft hyphen standing for a dash or, in Portuguese, a hyphen
            tok = "-"
            if lang == "pt" and prev[-1:].isalpha() and nxt[:1].isalpha():
                glue = glue_next = True
        elif tok in _ATTACH_LEFT:
            glue = True
        elif tok in _ATTACH_RIGHT:
            glue_next = True
        elif tok == "/" and prev[-1:].isalnum() and nxt[:1].isalnum():
            glue = glue_next = True
        elif (
            tok == "'"
            and prev[-1:].isalpha()
            and nxt[:1].isalnum()
            and (
                (lang in _ELIDING and len(prev) <= 7)
                or (lang == "el" and len(prev) <= 4)
                or nxt in {"s", "n", "t", "er", "erne", "ernes", "en"}
            )
        ):
            glue = True
            glue_next = lang != "el" and prev != "E"  # Greek "επ' αυτού"; Italian "E'" is È
        elif tok == "'" and not open_quote[tok] and tok not in toks[i + 1 :] and prev[-1:] == "s":
            glue = True  # an unpaired quote after -s: a plural possessive ("members' rights")
        elif tok in open_quote:
            glue_next = not open_quote[tok]
            glue = open_quote[tok]
            open_quote[tok] = not open_quote[tok]
        elif lang in _ELIDING and tok.endswith("'") and len(tok) <= 9 and nxt[:1].isalpha():
            glue_next = True
        out.append(tok if glue or not out else " " + tok)
    return "".join(out)


def read_book(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # chesterton-ball and shakespeare-caesar are Latin-1
        return data.decode("latin-1")


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, hard line breaks joined, the title line dropped."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        para = " ".join(block.split())
        if para and not (para.startswith("[") and para.endswith("]")):
            out.append(para)
    return out


_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"']))(?<!\bMr\.)(?<!\bMrs\.)(?<!\bDr\.)(?<!\bSt\.)"
    r"\s+(?=[\"'A-Z])"
)


def sentences(paragraph: str) -> list[str]:
    """Split a paragraph after . ! ? (and a closing quote) before a capital or a quote."""
    return [s for s in _SENTENCE_END.split(paragraph) if s]


def _spread(items: list, k: int) -> list:
    if k >= len(items):
        return list(items)
    return [items[(2 * i + 1) * len(items) // (2 * k)] for i in range(k)]


def _write_jsonl(path: Path, records: list[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(records)


def build(shared: Path, out: Path) -> dict[str, int]:
    """Write every file under ``out``; return the number of records of each."""
    counts = {}
    for lang in LANGUAGES:
        lines = (shared / "langid" / "europarl" / f"{lang}.txt").read_text("utf-8").splitlines()
        valid = [(i, line) for i, line in enumerate(lines) if 8 <= len(line.split()) <= 60]
        records = [
            {"line": i, "text": detokenize(line, lang)} for i, line in _spread(valid, N_EUROPARL)
        ]
        counts[f"europarl/{lang}.jsonl"] = _write_jsonl(out / "europarl" / f"{lang}.jsonl", records)

    books = {b: read_book(shared / "text" / "gutenberg" / f"{b}.txt") for b in PROSE_BOOKS}
    paras = {b: paragraphs(text) for b, text in books.items()}
    broad = {
        b: _spread([p for p in ps if 40 <= len(p.split()) <= 150], N_BROAD_PER_BOOK)
        for b, ps in paras.items()
    }
    records = [{"book": b, "text": broad[b][i]} for i in range(N_BROAD_PER_BOOK) for b in broad]
    counts["gutenberg_broad.jsonl"] = _write_jsonl(out / "gutenberg_broad.jsonl", records)

    corpus = [
        (b, s)
        for b, ps in paras.items()
        for p in ps
        for s in sentences(p)
        if 4 <= len(s.split()) <= 80
    ]
    chosen: set[int] = set()
    for bigram in COMPOUND_BIGRAMS:
        by_kind: dict[str, list[int]] = {"positive": [], "first_only": [], "second_only": []}
        for idx, (_, s) in enumerate(corpus):
            for kind in {kind for kind, _ in bigram_occurrences(s, bigram)}:
                by_kind[kind].append(idx)
        for ids in by_kind.values():
            chosen.update(_spread(ids, N_COMPOUND_SENTENCES))
    records = [
        {"id": n, "book": corpus[idx][0], "text": corpus[idx][1]}
        for n, idx in enumerate(sorted(chosen))
    ]
    counts["gutenberg_compounds.jsonl"] = _write_jsonl(out / "gutenberg_compounds.jsonl", records)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "mechlin" / "datasets" / "data" / "features"
    )
    args = parser.parse_args()
    for name, n in build(args.shared, args.out).items():
        print(f"{args.out / name}: {n} records")


if __name__ == "__main__":
    main()
