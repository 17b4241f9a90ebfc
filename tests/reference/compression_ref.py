"""Slow, obviously correct references for the compression area.

``surprisal_ref``: for every token, one bridge forward over its window's prefix (the start
token and the window's earlier tokens), the coder's distribution written out by hand (special
tokens removed, the rest renormalised), and ``-log2`` of the token's probability, plus what the
leaky coder's floor costs every token. No batching,
no KV cache, no masking tricks: O(n * window) forwards, for tiny inputs only.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mechlin.compression.bits import ESCAPE_BITS
from mechlin.compression.coder import byte_table, start_token


@torch.no_grad()
def surprisal_ref(model: Any, data: bytes, window: int, stride: int) -> list[float]:
    table = byte_table(model)
    ids = table.encode(data).ids
    start = start_token(model)
    coded = [i for i, b in enumerate(table.token_bytes) if b is not None]
    out: list[float] = []
    scored, begin = 0, 0
    while scored < len(ids):
        end = min(begin + window, len(ids))
        for t in range(scored, end):
            prefix = [start] + [i if i < table.n_ids else start for i in ids[begin:t]]
            logits = model(torch.tensor([prefix]))[0, -1, : table.n_ids].double()
            if ids[t] >= table.n_ids:
                out.append(ESCAPE_BITS)
                continue
            p = torch.softmax(logits, -1)
            # the leaky coder reserves 2^-24 for each of its n_ids + 256 symbols
            leak = -math.log2((2**24 - table.n_symbols) / 2**24)
            out.append(-math.log2(float(p[ids[t]] / p[coded].sum())) + leak)
        scored = end
        begin += stride
    return out
