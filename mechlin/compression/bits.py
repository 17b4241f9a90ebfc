"""Surprisal: how many bits the model spends on each token of a text, without coding it.

A range coder driven by the model spends ``-log2 p(token | context)`` bits per token (plus a few
bytes in all), so the model's cross-entropy *is* the compressed size. ``surprisal`` measures it
with full batched forwards, far faster than coding, and returns every token's bits, the rank of
the token that came and the entropy of the model's prediction.

It measures the coder's own distribution: the start token before each window, special tokens at
probability 0 (they stand for no bytes; the rest renormalized), a byte without a token of its
own at the coder's floor, ``ESCAPE_BITS``, and every other token plus the floor's cost,
``leak_bits`` (the coder keeps every symbol above zero). With ``stride=None`` the windows are
the coder's (independent, ``window`` tokens each), and the total agrees with ``compress``'s real
size to well within 1% (``tests/compression/test_surprisal.py``). With a ``stride`` smaller than
the window, windows overlap as in Huang et al. 2024 ("Compression Represents Intelligence
Linearly", arXiv 2404.09937: window 1900, stride 512): each window scores only the tokens no
earlier window scored, so every token but the first window's has at least ``window - stride``
tokens of context. That is the better measure of a model; the coder does not use it (its windows
must be independent to batch).

Bits per byte (bpb) is the unit of compression papers (Delétang et al. 2023; ts_zip); bits per
character (bpc) is Huang et al.'s; bits per token depends on the tokenizer and compares only
models that share one.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechlin import viz
from mechlin._checks import checked
from mechlin.compression.coder import _hf, _model_name, byte_table, start_token
from mechlin.errors import ArgumentError
from mechlin.results import Result

ESCAPE_BITS = 24.0  # the leaky coder's smallest probability, 2^-24 (constriction's precision)


def leak_bits(n_symbols: int) -> float:
    """What the leaky coder adds to every token: it reserves one 2^-24 quantum for each of the
    ``n_symbols`` symbols, so the rest of the distribution is scaled by (2^24 - n) / 2^24
    (0.004 bits for SmolLM2's 49,408 symbols, 0.023 for Gemma-3's 262,400)."""
    return -math.log2((2**24 - n_symbols) / 2**24)


def count_chars(data: bytes) -> int:
    """Characters of UTF-8 ``data``: the bytes that start one (not 0b10xxxxxx); each invalid
    byte counts as a character of its own where it does not continue one."""
    return sum((b & 0xC0) != 0x80 for b in data)


_LOGITS_BUDGET = 2**28  # float32 logits held per forward (1 GiB): bounds the batch


@dataclass(frozen=True)
class Surprisal(Result):
    """Per-token bits of a text under a model, and what they add up to."""

    token_ids: Int[Tensor, " pos"]  # coder symbols: model ids, escapes from d_vocab - 256 on
    token_text: tuple[str, ...]  # each token's bytes as text (invalid UTF-8 shown as U+FFFD)
    bits: Float[Tensor, " pos"]  # -log2 p(token | context) under the coder's distribution
    rank: Int[Tensor, " pos"]  # 1 = the model's top guess; escapes rank after every token
    entropy: Float[Tensor, " pos"]  # bits: the model's uncertainty before the token
    context: Int[Tensor, " pos"]  # tokens of context each prediction saw (0 = window start)
    n_bytes: int
    n_chars: int
    window: int
    stride: int
    model_name: str
    d_vocab: int  # the coder's alphabet: the model's ids + 256 escapes

    def __post_init__(self) -> None:
        n = len(self.token_text)
        for name in ("token_ids", "bits", "rank", "entropy", "context"):
            if getattr(self, name).shape != (n,):
                raise ArgumentError(f"Surprisal.{name} must have {n} entries (one per token)")

    @property
    def n_tokens(self) -> int:
        return len(self.token_text)

    @property
    def total_bits(self) -> float:
        return float(self.bits.double().sum())

    @property
    def bits_per_byte(self) -> float:
        return self.total_bits / self.n_bytes if self.n_bytes else 0.0

    @property
    def bits_per_char(self) -> float:
        return self.total_bits / self.n_chars if self.n_chars else 0.0

    @property
    def bits_per_token(self) -> float:
        return self.total_bits / self.n_tokens if self.n_tokens else 0.0

    @property
    def predicted_bytes(self) -> int:
        """What an ideal coder would write: ``ceil(total_bits / 8)`` (no header)."""
        return math.ceil(self.total_bits / 8)

    @property
    def top1(self) -> float:
        """The fraction of tokens that were the model's top guess."""
        return float((self.rank == 1).double().mean()) if self.n_tokens else 0.0

    def summary(self) -> str:
        how = "independent windows" if self.stride == self.window else f"stride {self.stride}"
        return (
            f"{self.model_name} on {self.n_bytes:,} bytes ({self.n_tokens:,} tokens, window "
            f"{self.window}, {how}):\n"
            f"  {self.bits_per_byte:.3f} bits/byte, {self.bits_per_char:.3f} bits/char, "
            f"{self.bits_per_token:.3f} bits/token; top-1 {self.top1:.1%}\n"
            f"  an ideal coder writes {self.predicted_bytes:,} bytes "
            f"({self.predicted_bytes / max(self.n_bytes, 1):.1%} of the text)"
        )

    def plot(self, ax: Any = None) -> Any:
        fig, ax = viz.axes(ax, figsize=(8.0, 3.5))
        x = torch.arange(self.n_tokens)
        ax.scatter(x, self.bits, s=2, alpha=0.3, color="tab:blue", label="bits per token")
        if self.n_tokens:
            k = max(1, min(64, self.n_tokens // 10))
            smooth = torch.nn.functional.avg_pool1d(
                self.bits[None, None].float(), k, stride=1
            ).flatten()
            ax.plot(x[k - 1 :], smooth, color="tab:red", label=f"mean of {k}")
        ax.set_xlabel("token")
        ax.set_ylabel("bits")
        ax.set_title(f"{self.model_name}: {self.bits_per_byte:.3f} bits/byte")
        ax.legend(loc="upper right", fontsize="small")
        return fig

    def to_frame(self) -> Any:
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(
            {
                "token": list(self.token_text),
                "token_id": self.token_ids.tolist(),
                "bits": self.bits.tolist(),
                "rank": self.rank.tolist(),
                "entropy": self.entropy.tolist(),
                "context": self.context.tolist(),
            }
        )

    def surprise_map(self, *, max_tokens: int = 5000, scale_bits: float = 16.0) -> str:
        """HTML of the text, each token shaded by its bits (white: expected, red: surprising);
        hover for bits, rank and entropy. The first ``max_tokens`` tokens."""
        spans = []
        for i, text in enumerate(self.token_text[:max_tokens]):
            b = float(self.bits[i])
            alpha = min(b / scale_bits, 1.0)
            tip = f"{b:.2f} bits, rank {int(self.rank[i])}, entropy {float(self.entropy[i]):.2f}"
            spans.append(
                f'<span title="{tip}" style="background:rgba(220,40,40,{alpha:.2f})">'
                f"{html.escape(text)}</span>"
            )
        more = (
            f"<p>(first {max_tokens:,} of {self.n_tokens:,} tokens)</p>"
            if self.n_tokens > max_tokens
            else ""
        )
        return (
            '<div class="mechlin-surprise" style="white-space:pre-wrap;font-family:monospace;'
            f'line-height:1.5">{"".join(spans)}</div>{more}'
        )

    def _repr_html_(self) -> str:
        head = f"<b>Surprisal</b><pre>{html.escape(self.summary())}</pre>"
        return f'<div class="mechlin-result">{head}{self.surprise_map(max_tokens=1500)}</div>'


def _windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored) token ranges: each window scores [first, end)."""
    out, scored = [], 0
    start = 0
    while scored < n:
        end = min(start + window, n)
        out.append((start, end, scored))
        scored = end
        start += stride
    return out


@checked
def surprisal(
    model: Any,
    data: bytes,
    *,
    window: int = 1024,
    stride: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> Surprisal:
    """Every token's bits, rank and entropy under ``model``, as the coder would spend them.

    ``window``: tokens per window (the coder's ``window`` for its size; 1900 for Huang et
    al.'s setting). ``stride``: ``None`` for independent windows (the coder's); smaller than
    ``window`` for overlapping windows, each scoring only its new tokens.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ArgumentError(f"surprisal takes bytes, not {type(data).__name__}")
    data = bytes(data)
    stride = window if stride is None else stride
    if not 1 <= stride <= window:
        raise ArgumentError(f"surprisal: stride={stride} must lie in [1, window={window}]")
    n_ctx = int(getattr(model.cfg, "n_ctx", window) or window)
    if window > n_ctx:
        raise ArgumentError(f"surprisal: window={window} exceeds the model's context ({n_ctx})")
    table = byte_table(model)
    ids = table.encode(data).ids
    n_ids, start = table.n_ids, start_token(model)
    coded = torch.zeros(n_ids, dtype=torch.bool)
    coded[table.coded_ids] = True
    n_coded = int(coded.sum())
    leak = leak_bits(table.n_symbols)
    hf = _hf(model)
    device = next(hf.parameters()).device
    n = len(ids)
    bits = torch.zeros(n, dtype=torch.float32)
    rank = torch.zeros(n, dtype=torch.int64)
    entropy = torch.zeros(n, dtype=torch.float32)
    context = torch.zeros(n, dtype=torch.int64)
    spans = _windows(n, window, stride)
    per_forward = max(1, min(batch_size, _LOGITS_BUDGET // (window * n_ids)))
    all_ids = torch.tensor(ids, dtype=torch.int64)
    with tqdm(total=n, desc="surprisal", unit="tok", disable=not progress) as bar:
        for c in range(0, len(spans), per_forward):
            group = spans[c : c + per_forward]
            width = max(b - a for a, b, _ in group)
            # row r: the start token, then tokens a .. b-2; position j predicts token a + j
            inputs = torch.full((len(group), width), start, dtype=torch.int64)  # (B, T)
            for r, (a, b, _) in enumerate(group):
                fed = all_ids[a : b - 1]
                inputs[r, 1 : b - a] = torch.where(fed < n_ids, fed, torch.tensor(start))
            with torch.inference_mode():
                logits = hf(input_ids=inputs.to(device)).logits[..., :n_ids]  # (B, T, V)
                logits = logits.float().cpu().masked_fill(~coded, float("-inf"))
                logp = torch.log_softmax(logits, dim=-1)  # (B, T, V)
            for r, (a, b, first) in enumerate(group):
                pos = torch.arange(first - a, b - a)  # predictions at input rows pos
                target = all_ids[first:b]
                row = logp[r, pos]  # (n_new, V)
                p = row.exp()
                entropy[first:b] = -(p * row.nan_to_num(neginf=0.0)).sum(-1) / math.log(2)
                known = target < n_ids
                tgt = torch.where(known, target, torch.zeros_like(target))
                lp = row.gather(1, tgt[:, None]).squeeze(1)
                bits[first:b] = torch.where(
                    known, -lp / math.log(2) + leak, torch.tensor(ESCAPE_BITS)
                )
                rank[first:b] = torch.where(
                    known, (row > lp[:, None]).sum(-1) + 1, torch.tensor(n_coded + 1)
                )
                context[first:b] = pos
                bar.update(b - first)
    return Surprisal(
        token_ids=all_ids,
        token_text=tuple(table.decode([i]).decode("utf-8", errors="replace") for i in ids),
        bits=bits,
        rank=rank,
        entropy=entropy,
        context=context,
        n_bytes=len(data),
        n_chars=count_chars(data),
        window=window,
        stride=stride,
        model_name=_model_name(model),
        d_vocab=table.n_symbols,
    )
