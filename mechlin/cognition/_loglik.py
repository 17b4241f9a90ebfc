"""Log-probability rows of many token sequences, batched: the engine under expression scoring.

A *request* is a token sequence (the model's input) and the increasing positions whose
next-token distribution is read. Both engines yield, per request, the log-softmax rows (float32)
at those positions, the same numbers up to float32 rounding:

- ``padded_rows`` (the plain way): requests sorted longest first, right-padded into batches of
  ``batch_size``, each run whole. In a causal model no real token attends to a later one, so the
  padding changes nothing.
- ``tree_rows`` (the default): every distinct token prefix runs *once* and every distinct read
  row is unembedded once. The requests form a prefix tree (radix tree: a node is a span of
  tokens that all requests through it share, its children the ways they go on); the tree runs
  level by level, each node's tokens against the key-value cache of its ancestors (a Hugging
  Face ``DynamicCache`` handed to the bridge's ``forward(past_key_values=...)``, so hooks on
  the bridge apply to every token, once). An ARC item's cloze options share the ~28 tokens of
  ``"Question: ...\nAnswer:"`` and differ in ~4, and its letter prompt shares the question:
  lm-eval runs ~130 tokens and unembeds ~130 rows per item where this runs ~45 and unembeds
  ~13 (cloze only). Pitfall: a hook that indexes *positions* sees each forward's own positions
  (a node's tokens start at 0); hooks acting on every position alike are unaffected.

How the tree path lays out a forward (our choices, invisible in the numbers): a level's nodes
are sorted by length and split into forwards by a small dynamic program minimising padded
tokens plus a fixed cost per forward (``FORWARD_COST`` tokens: each forward reads every weight
once), at most ``4 * batch_size`` nodes and ``batch_size`` times the longest request's tokens a
forward. Each row is its ancestors' cache, *left*-padded so that it ends at the same index in
every row, then the node's tokens right-padded, with an attention mask over both and explicit
positions. After the forward each row's cache is compacted the same way (real tokens
contiguous, ending at the last index), so a sliding-window layer always sees true distances.
Requests are taken ``WINDOW * batch_size`` at a time (their caches held meanwhile).

In both, the forward stops at the final residual stream (a hook raises) and only the read rows
are unembedded: the logits of a whole sequence are never built. The engines differ by float32
rounding only (other matmul shapes, other summation orders): a few ulps of each log-prob.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechlin._types import Model
from mechlin.sites import hook_name, unembed
from mechlin.tokens import input_device

FORWARD_COST = 48  # a forward's fixed cost, in padded tokens (our estimate on CPU; speed only)
WINDOW = 16  # requests per window, in batches (the caches of a window are held together)


class _Stop(Exception):
    """Raised by the final-residual hook: nothing after it is needed."""


def _final_resid(
    model: Model, tokens: Tensor, **forward: Any
) -> Float[Tensor, "batch pos d_model"]:
    """The final residual stream of ``tokens`` (batch, pos): the forward stops there."""
    got: dict[str, Tensor] = {}

    def grab(act: Tensor, hook: Any) -> None:
        got["resid"] = act
        raise _Stop

    try:
        with model.hooks(fwd_hooks=[(hook_name(model, "final_resid"), grab)]):
            model(tokens, return_type=None, **forward)
    except _Stop:
        pass
    return got["resid"]


def _read(
    model: Model, resid: Tensor, rows: Sequence[tuple[int, Sequence[int]]]
) -> Float[Tensor, "row vocab"]:
    """Log-softmax (float32, on the CPU) at positions ``pos`` of batch row ``b``, per entry."""
    picked = torch.cat([resid[b, list(pos)] for b, pos in rows])  # (rows, d_model)
    return unembed(model, picked).float().log_softmax(-1).cpu()  # (rows, vocab)


@torch.no_grad()
def padded_rows(
    model: Model,
    inputs: Sequence[list[int]],
    positions: Sequence[list[int]],
    *,
    batch_size: int,
    bar: Any,
) -> Iterator[tuple[int, Float[Tensor, "pos vocab"]]]:
    """Yield ``(request, log-softmax rows at its positions)`` for every request, batched.

    Requests are sorted longest first and right-padded; each row is read at its own positions.
    """
    device = input_device(model)
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(inputs[i]) for i in idx)
        tokens = torch.zeros(len(idx), width, dtype=torch.long)  # (batch, pos), right-padded
        for b, i in enumerate(idx):
            tokens[b, : len(inputs[i])] = torch.tensor(inputs[i])
        resid = _final_resid(model, tokens.to(device))  # (batch, pos, d_model)
        logprobs = _read(model, resid, [(b, positions[i]) for b, i in enumerate(idx)])
        offset = 0
        for i in idx:
            n = len(positions[i])
            yield i, logprobs[offset : offset + n]
            offset += n
        bar.update(sum(len(inputs[i]) for i in idx))


def common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``sequences``."""
    first, n = sequences[0], min(len(s) for s in sequences)
    for t in range(n):
        if any(s[t] != first[t] for s in sequences):
            return t
    return n


def split_by_length(
    lengths: Sequence[int], *, max_rows: int, max_tokens: int, cost: int = FORWARD_COST
) -> list[list[int]]:
    """Indices of ``lengths`` in forwards: sorted longest first, cut where padding costs more.

    Minimises the sum over forwards of ``cost + rows * longest row`` (exact, dynamic program)
    with at most ``max_rows`` rows and ``max_tokens`` padded tokens a forward (a longer row
    goes alone).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0] * (n + 1)  # best[j]: cheapest split of the first j rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        best[j], cut[j] = best[j - 1] + cost + lengths[order[j - 1]], j - 1
        for i in range(j - 2, max(j - max_rows, 0) - 1, -1):
            area = (j - i) * lengths[order[i]]
            if area > max_tokens:
                break
            if best[i] + cost + area < best[j]:
                best[j], cut[j] = best[i] + cost + area, i
    spans, j = [], n
    while j:
        spans.append(order[cut[j] : j])
        j = cut[j]
    return spans[::-1]


@dataclass
class _Node:
    """Tokens ``[start, end)`` shared by ``requests``; ``children`` go on from ``end``."""

    start: int
    end: int
    requests: list[int]
    ending: list[int]  # the requests whose tokens end here
    reads: list[int]  # the positions in [start, end) some request reads, increasing
    children: list[_Node] = field(default_factory=list)
    parent: _Node | None = None
    rows: dict[int, Tensor] = field(default_factory=dict)  # read position -> log-softmax row
    cache: tuple[int, int] | None = None  # (forward, row) of this node's compacted cache


def prefix_tree(inputs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]) -> list[_Node]:
    """The roots of the radix tree of ``inputs`` (each request in one leaf or internal node)."""

    def build(reqs: list[int], start: int, parent: _Node | None) -> list[_Node]:
        end = start + common_prefix([inputs[r][start:] for r in reqs])
        parts: dict[int, list[int]] = {}
        for r in reqs:
            if len(inputs[r]) > end:
                parts.setdefault(inputs[r][end], []).append(r)
        if end == start:  # only at the root: requests that share no first token
            return [n for sub in parts.values() for n in build(sub, start, parent)]
        reads = sorted({t for r in reqs for t in positions[r] if start <= t < end})
        ending = [r for r in reqs if len(inputs[r]) == end]
        node = _Node(start, end, reqs, ending, reads, parent=parent)
        node.children = [n for sub in parts.values() for n in build(sub, end, node)]
        return [node]

    return build(list(range(len(inputs))), 0, None)


@dataclass
class _Caches:
    """The compacted key-value caches of one forward's rows (real tokens end at the last index)."""

    keys: list[Tensor]  # per layer (row, kv_head, pos, d_head)
    values: list[Tensor]
    mask: Tensor  # (row, pos): 1 on the real tokens

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])


@torch.no_grad()
def tree_rows(
    model: Model,
    inputs: Sequence[list[int]],
    positions: Sequence[list[int]],
    *,
    batch_size: int,
    bar: Any,
) -> Iterator[tuple[int, Float[Tensor, "pos vocab"]]]:
    """As ``padded_rows``, each distinct token prefix run once (see the module docstring)."""
    step = WINDOW * batch_size
    for first in range(0, len(inputs), step):
        ids = range(first, min(first + step, len(inputs)))
        sub_inputs = [inputs[r] for r in ids]
        sub_positions = [positions[r] for r in ids]
        max_tokens = batch_size * max(len(x) for x in sub_inputs)
        level = prefix_tree(sub_inputs, sub_positions)
        caches: list[_Caches] = []
        while level:
            parents, caches = caches, []
            for span in split_by_length(
                [n.end - n.start for n in level], max_rows=4 * batch_size, max_tokens=max_tokens
            ):
                nodes = [level[i] for i in span]
                _run_nodes(model, nodes, sub_inputs, parents, caches)
                for node in nodes:
                    for r in node.ending:
                        yield first + r, _rows_of(node, sub_positions[r])
                        bar.update(len(sub_inputs[r]))
                    if not node.children:
                        node.rows.clear()  # a leaf's rows are read by its own requests only
            level = [c for n in level for c in n.children]


def _rows_of(node: _Node, positions: Sequence[int]) -> Tensor:
    """A request's read rows, found on the path from ``node`` up (where its positions are)."""
    rows = []
    for t in positions:
        at: _Node | None = node
        while at is not None and t < at.start:
            at = at.parent
        assert at is not None
        rows.append(at.rows[t])
    return torch.stack(rows)


def _run_nodes(
    model: Model,
    nodes: Sequence[_Node],
    inputs: Sequence[list[int]],
    parents: Sequence[_Caches],
    caches: list[_Caches],
) -> None:
    """One forward of ``nodes`` after their parents' caches: their read rows and caches."""
    from transformers import DynamicCache  # noqa: PLC0415

    device = input_device(model)
    lengths = [n.end - n.start for n in nodes]
    width = max(lengths)
    tokens = torch.zeros(len(nodes), width, dtype=torch.long)  # (row, pos), right-padded
    mask = torch.zeros(len(nodes), width, dtype=torch.long)
    for b, n in enumerate(nodes):
        tokens[b, : lengths[b]] = torch.tensor(inputs[n.requests[0]][n.start : n.end])
        mask[b, : lengths[b]] = 1
    start = torch.tensor([n.start for n in nodes])  # real tokens before each row's own
    if nodes[0].parent is None:  # roots: no cache before them
        cache, before = DynamicCache(), mask[:, :0].to(device)
    else:
        owners = []
        for n in nodes:
            assert n.parent is not None and n.parent.cache is not None  # a level shares depth
            owners.append(n.parent.cache)
        prior = _gather(parents, owners)
        cache = DynamicCache(ddp_cache_data=list(zip(prior.keys, prior.values, strict=True)))
        before = prior.mask
    full_mask = torch.cat([before, mask.to(device)], 1)  # (row, cached + pos)
    resid = _final_resid(
        model,
        tokens.to(device),
        attention_mask=full_mask,
        position_ids=(start[:, None] + torch.arange(width)).to(device),
        past_key_values=cache,
    )  # (row, pos, d_model)
    reads = [(b, [t - n.start for t in n.reads]) for b, n in enumerate(nodes) if n.reads]
    if reads:
        logprobs = iter(_read(model, resid, reads))  # (rows, vocab), one per read position
        for b, _ in reads:
            nodes[b].rows.update((t, next(logprobs)) for t in nodes[b].reads)
    keep = [b for b, n in enumerate(nodes) if n.children]
    if keep:
        caches.append(_compact(cache, full_mask, keep, [nodes[b].end for b in keep]))
        for row, b in enumerate(keep):
            nodes[b].cache = (len(caches) - 1, row)


def _compact(cache: Any, mask: Tensor, keep: Sequence[int], ends: Sequence[int]) -> _Caches:
    """Rows ``keep`` of a cache whose real tokens are ``mask``'s ones, each row's ``ends``
    real tokens moved to end at the last index (left-padded, contiguous)."""
    device = mask.device
    rows = torch.tensor(list(keep), device=device)
    real = mask[rows]  # (row, pos)
    n_real = torch.tensor(list(ends), device=device)
    width = int(n_real.max())
    # row b's real tokens are contiguous from its first one (left-padded cache, then its own
    # right-padded tokens): slot j of the result takes source first_b + j - (width - n_b)
    first = real.argmax(-1)  # (row,) index of the first real token
    slots = torch.arange(width, device=device)
    src = (first[:, None] + slots - (width - n_real)[:, None]).clamp(min=0)  # (row, width)
    new_mask = (slots >= (width - n_real)[:, None]).long()

    def pick(t: Tensor) -> Tensor:  # (row, kv_head, pos, d_head) -> (row, kv_head, width, d_head)
        t = t[rows]
        index = src[:, None, :, None].expand(t.shape[0], t.shape[1], width, t.shape[3])
        return t.gather(2, index)

    return _Caches(
        [pick(layer.keys) for layer in cache.layers],
        [pick(layer.values) for layer in cache.layers],
        new_mask,
    )


def _gather(caches: Sequence[_Caches], owners: Sequence[tuple[int, int]]) -> _Caches:
    """The cache rows ``owners`` ((forward, row) each), left-padded to one width, in order."""
    used = sorted({c for c, _ in owners})
    width = max(caches[c].width for c in used)
    first = {}  # forward -> its first row in the stacked caches
    for c in used:
        first[c] = sum(len(caches[u].mask) for u in used if u < c)
    idx = torch.tensor([first[c] + b for c, b in owners], device=caches[used[0]].mask.device)

    def stack(parts: Sequence[Tensor], dim: int) -> Tensor:  # left-pad to ``width``, then pick
        pads = [(0, 0) * (-1 - dim) + (width - caches[c].width, 0) for c in used]
        padded = [torch.nn.functional.pad(t, pad) for t, pad in zip(parts, pads, strict=True)]
        return torch.cat(padded).index_select(0, idx)

    n_layers = len(caches[used[0]].keys)
    return _Caches(
        [stack([caches[c].keys[i] for c in used], -2) for i in range(n_layers)],
        [stack([caches[c].values[i] for c in used], -2) for i in range(n_layers)],
        stack([caches[c].mask for c in used], -1),
    )
