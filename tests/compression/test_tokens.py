"""ByteTable: any bytes -> token ids -> the same bytes (byte-level and SentencePiece)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mechlin.compression import ByteTable
from mechlin.errors import NotSupportedError

HARD = [
    b"",
    b"a",
    b" leading space and trailing  ",
    b"\x00\x00NULs\x00",
    b"\xff\xfe\x80 invalid UTF-8 \xc3",
    bytes(range(256)),
    "emoji \U0001f600 caf\u00e9 \u4e2d\u6587\r\nCRLF\r\n\ttab".encode(),
    b"<bos> <eos> <|endoftext|> <pad> special-token text",
    b"\n\n\n   \n",
    ("word " * 300).encode(),
]


def _sentencepiece_tokenizer(byte_fallback_for: range = range(256)) -> PreTrainedTokenizerFast:
    """A Llama-2-style BPE: "▁" for spaces, <0xNN> byte pieces (only ``byte_fallback_for``)."""
    pieces = ["<unk>", "<bos>", "<eos>", *(f"<0x{b:02X}>" for b in byte_fallback_for)]
    pieces += [*"\u2581abcdefghijklmnopqrstuvwxyz", "\u2581t", "he", "\u2581the"]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = [("\u2581", "t"), ("h", "e"), ("\u2581t", "he")]
    tok = Tokenizer(models.BPE(vocab, merges, byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    return hf


def _roundtrip(table: ByteTable, data: bytes) -> None:
    enc = table.encode(data)
    assert table.decode(enc.ids) == data
    assert enc.n_bytes == len(data)
    assert all(0 <= i < table.n_symbols for i in enc.ids)


@pytest.mark.parametrize("data", HARD, ids=range(len(HARD)))
def test_tiny_byte_level_table_roundtrips_every_kind_of_bytes(tiny, data: bytes) -> None:
    table = ByteTable(tiny.tokenizer, tiny.cfg.d_vocab)
    assert table.scheme == "byte_level"
    _roundtrip(table, data)


def test_clean_text_is_tokenized_as_the_tokenizer_does(tiny) -> None:
    table = ByteTable(tiny.tokenizer, tiny.cfg.d_vocab)
    text = "the quick brown fox, and then some more words"
    enc = table.encode(text.encode())
    assert enc.ids == tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert enc.n_fallback_bytes == 0


def test_special_token_text_is_coded_as_text_not_as_the_special_token(tiny) -> None:
    table = ByteTable(tiny.tokenizer, tiny.cfg.d_vocab)
    enc = table.encode(b"<bos>")
    special = set(tiny.tokenizer.all_special_ids)
    assert not special & set(enc.ids)
    assert table.decode(enc.ids) == b"<bos>"


@pytest.mark.parametrize("data", HARD, ids=range(len(HARD)))
def test_sentencepiece_table_roundtrips_with_byte_pieces(data: bytes) -> None:
    tok = _sentencepiece_tokenizer()
    table = ByteTable(tok, len(tok))
    assert table.scheme == "sentencepiece"
    assert table.n_escaped == 0
    _roundtrip(table, data)


def test_bytes_without_a_token_become_escapes_past_the_vocabulary() -> None:
    tok = _sentencepiece_tokenizer(byte_fallback_for=range(128))  # no pieces for 0x80..0xff
    table = ByteTable(tok, len(tok))
    assert table.n_escaped == 128 - sum(
        1 for b in range(128, 256) if table.byte_ids[b] < table.n_ids
    )
    data = "caf\u00e9 \xff".encode("latin-1") + b" and \x80\x81"
    enc = table.encode(data)
    assert table.decode(enc.ids) == data
    escapes = [i for i in enc.ids if i >= table.n_ids]
    assert escapes and all(i - table.n_ids >= 128 for i in escapes)
    assert enc.n_fallback_bytes >= len(escapes)


def test_fingerprint_names_the_table() -> None:
    a = ByteTable(_sentencepiece_tokenizer(), 400)
    b = ByteTable(_sentencepiece_tokenizer(), 400)
    c = ByteTable(_sentencepiece_tokenizer(byte_fallback_for=range(128)), 400)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


def test_an_unsupported_decoder_is_refused_by_name() -> None:
    tok = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    tok.decoder = decoders.WordPiece()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    with pytest.raises(NotSupportedError, match="WordPiece"):
        ByteTable(hf, 2)


@pytest.mark.bundled
@pytest.mark.parametrize("name", ["smollm2", "gemma"])
def test_bundled_tables_roundtrip_and_match_the_tokenizer(name: str, request) -> None:
    model = request.getfixturevalue(name)
    table = ByteTable(model.tokenizer, model.cfg.d_vocab)
    for data in HARD:
        _roundtrip(table, data)
    text = "Compression is prediction: the model spends -log2 p bits on each token.\n" * 3
    want = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert table.encode(text.encode()).ids == want
    if name == "smollm2":
        # SmolLM2 has no token for 21 bytes (among them \x04 and \xff); they are escapes
        assert table.n_escaped == 21
        assert table.byte_ids[0x04] >= table.n_ids and table.byte_ids[0xFF] >= table.n_ids
    else:
        assert table.n_escaped == 0
