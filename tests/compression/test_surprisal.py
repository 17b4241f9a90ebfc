"""surprisal: against a slow per-prefix reference, and against the coder's real size."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import pytest
import torch

from mechlin.compression import Surprisal, compress, read_header, surprisal
from mechlin.compression.coder import byte_table
from mechlin.errors import ArgumentError
from tests.reference.compression_ref import surprisal_ref

from .test_tokens import HARD

TEXT = b"the quick brown fox jumps over the lazy dog; then the dog sleeps.\n" * 2


@pytest.mark.parametrize(("window", "stride"), [(8, None), (8, 3), (5, 5), (40, 1)])
def test_bits_match_a_per_prefix_reference(tiny, window: int, stride: int | None) -> None:
    s = surprisal(tiny, TEXT, window=window, stride=stride, batch_size=2, progress=False)
    ref = torch.tensor(surprisal_ref(tiny, TEXT, window, stride or window), dtype=torch.float64)
    # float32 logits over a batched vs a one-prefix forward: a few ulps of log p, times |log p|
    torch.testing.assert_close(s.bits.double(), ref, rtol=1e-5, atol=1e-4)
    assert s.n_tokens == len(ref)


def test_context_follows_the_windows(tiny) -> None:
    s = surprisal(tiny, TEXT, window=8, stride=3, progress=False)
    assert s.context[:8].tolist() == list(range(8))
    assert int(s.context[8:].min()) >= 8 - 3  # every later token has >= window - stride context
    ind = surprisal(tiny, TEXT, window=8, progress=False)
    assert ind.context.tolist() == [i % 8 for i in range(ind.n_tokens)]


def test_rank_entropy_and_rates_are_consistent(tiny) -> None:
    s = surprisal(tiny, TEXT, window=16, progress=False)
    assert bool((s.rank >= 1).all()) and bool((s.entropy >= 0).all())
    top = s.rank == 1
    assert bool((s.bits[top] <= s.bits[~top].min() + 20).all())
    # the top guess holds at least 1/n of the mass over the n coded ids (plus the coder's leak)
    from mechlin.compression.bits import leak_bits

    n_coded = len(byte_table(tiny).coded_ids)
    assert bool((s.bits[top] <= math.log2(n_coded) + leak_bits(s.d_vocab) + 1e-4).all())
    assert bool((s.bits >= 0).all())
    assert s.bits_per_byte == pytest.approx(s.total_bits / len(TEXT))
    assert s.bits_per_char == pytest.approx(s.total_bits / len(TEXT.decode()))
    assert s.predicted_bytes == math.ceil(s.total_bits / 8)


@pytest.mark.parametrize("data", [HARD[6] * 4, HARD[5], TEXT * 6], ids=["text", "bytes", "long"])
def test_total_agrees_with_the_real_coded_size_within_one_percent(tiny, data: bytes) -> None:
    blob = compress(tiny, data, window=32, batch_size=8, progress=False)
    payload = len(blob) - read_header(blob).header_bytes
    s = surprisal(tiny, data, window=32, progress=False)
    n_chunks = -(-read_header(blob).n_tokens // (32 * 8))
    # each chunk ends with the range coder's flush (at most two 32-bit words) and its length
    assert payload == pytest.approx(s.total_bits / 8, rel=0.01, abs=9 * n_chunks)


def test_result_saves_loads_and_renders(tiny, tmp_path: Path) -> None:
    s = surprisal(tiny, b"<script>alert(1)</script> & more", window=16, progress=False)
    back = Surprisal.load(s.save(tmp_path / "s.pt"))
    assert torch.equal(back.bits, s.bits) and back.token_text == s.token_text
    page = s._repr_html_()
    assert "<script>" not in page and "&lt;" in page  # the text is escaped token by token
    shown = re.sub(r"<span[^>]*>|</span>", "", s.surprise_map())
    assert html.unescape(shown).find("<script>alert(1)</script> & more") > 0
    assert len(s.to_frame()) == s.n_tokens
    s.plot()


def test_bad_windows_are_refused(tiny) -> None:
    with pytest.raises(ArgumentError, match="stride"):
        surprisal(tiny, TEXT, window=8, stride=9, progress=False)
    with pytest.raises(ArgumentError, match="context"):
        surprisal(tiny, TEXT, window=10**6, progress=False)


@pytest.mark.bundled
def test_smollm2_surprisal_agrees_with_its_coder(smollm2) -> None:
    data = (Path(__file__).resolve().parents[2] / "README.md").read_bytes()[:2500]
    blob = compress(smollm2, data, window=128, batch_size=8, progress=False)
    payload = len(blob) - read_header(blob).header_bytes
    s = surprisal(smollm2, data, window=128, progress=False)
    assert payload == pytest.approx(s.total_bits / 8, rel=0.01)
    assert s.bits_per_byte < 3.0  # a trained model on English markdown (xz: about 4)
