"""Collect neuron activations over a text dataset: the input of every probe.

Sparse probing (Gurnee et al. 2023) fits classifiers on ``[example, neuron]`` matrices, one
layer at a time. ``collect_activations`` runs the model over the texts in batches and keeps,
for every requested hook (by default every layer's MLP neurons, ``blocks.{l}.mlp.hook_post``),
one pooled row per text:

- ``"mean"``: mean over the text's tokens (context features such as language),
- ``"max"``: max over the tokens (entity features),
- ``"last"``: the last token (token-level features, written as prefixes ending at the token),
- ``"none"``: one row per token, with the example index and position of each row.

Pitfalls handled here:

- Padding. Texts of different lengths share a batch, padded on the right. In a causal model a
  real token never attends to a later position, so right padding leaves every real token's
  activation exactly as in an unpadded run (tested); the padding is then masked out of the
  pooling.
- BOS. When the tokenizer prepends a BOS token, its activations (often huge, always the same) are
  left out of every pooling: they carry no information about the text.
- Memory. With ``out=`` the rows go to disk in chunks of ``chunk_size`` texts, so memory holds
  one chunk; a rerun with the same ``out=`` resumes after the last finished chunk, and the
  finished store is one file per hook read back memory-mapped. ``dtype=torch.float16`` halves
  the storage.
- Wasted work. The forward pass stops as soon as every requested hook has fired (no later
  layers, no unembedding).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechlin._checks import checked
from mechlin._store import ItemStore, model_fingerprint, read_index
from mechlin._types import Model
from mechlin.errors import (
    ArgumentError,
    ArgumentTypeError,
    EmptyInputError,
    MissingHookError,
    NotInResultError,
    StoreMismatchError,
)
from mechlin.runners import Item, Runner, as_runner
from mechlin.sites import hook_names
from mechlin.tokens import context_length, input_device

Pooling = Literal["mean", "max", "last", "none"]
_FORMAT = 2
_KIND = "activations"
_ROWS = "rows"
_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class NeuronActivations:
    """Pooled activations of each hook, one ``[row, neuron]`` matrix per hook.

    Rows are texts (pooling ``"mean"``, ``"max"``, ``"last"``) or tokens (``"none"``: then
    ``example_idx`` and ``position`` say where each row comes from). ``token_ids`` is the token
    read by each row (the last token for pooled rows), for showing what a neuron fires on.
    """

    hooks: tuple[str, ...]
    pooling: Pooling
    n_examples: int
    example_idx: Int[Tensor, " row"]
    position: Int[Tensor, " row"]  # position in the model's input (BOS included), -1 if pooled
    token_ids: Int[Tensor, " row"]
    n_tokens: Int[Tensor, " example"]  # tokens of each text that entered the pooling
    model_name: str
    _data: dict[str, Tensor] = field(default_factory=dict, repr=False)
    _dir: str | None = None

    def __post_init__(self) -> None:
        n_rows = self.example_idx.shape[0]
        if not (self.position.shape[0] == self.token_ids.shape[0] == n_rows):
            raise ArgumentError("example_idx, position and token_ids must have one entry per row")
        if self.n_tokens.shape[0] != self.n_examples:
            raise ArgumentError("n_tokens must have one entry per example")
        if self._dir is None and set(self._data) != set(self.hooks):
            raise ArgumentError("in-memory activations need one matrix per hook")

    @property
    def n_rows(self) -> int:
        return int(self.example_idx.shape[0])

    @property
    def layers(self) -> tuple[int, ...]:
        """Layer index of each hook (``-1`` for hooks outside the blocks)."""
        return tuple(_layer_of(h) for h in self.hooks)

    def __getitem__(self, key: int | str) -> Float[Tensor, "row neuron"]:
        """The matrix of one hook, by hook name or by layer index (``acts[3]``)."""
        name = self._resolve(key)
        if self._dir is not None:
            return torch.load(
                Path(self._dir) / f"{_hook_key(name)}.pt", mmap=True, weights_only=True
            )
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.hooks)

    def __len__(self) -> int:
        return len(self.hooks)

    def _resolve(self, key: int | str) -> str:
        if isinstance(key, str):
            if key not in self.hooks:
                raise NotInResultError(
                    f"no activations for hook {key!r}; collected: {list(self.hooks)}"
                )
            return key
        matches = [h for h in self.hooks if _layer_of(h) == key]
        if len(matches) != 1:
            raise NotInResultError(
                f"layer {key} matches {len(matches)} collected hooks ({matches}); "
                f"index by hook name instead. Collected: {list(self.hooks)}"
            )
        return matches[0]

    def rows_of(self, example: int) -> Int[Tensor, " k"]:
        """Row indices of one example (its tokens under pooling ``"none"``)."""
        return torch.nonzero(self.example_idx == example).flatten()

    def save(self, directory: str | Path) -> Path:
        """Write these activations as a store that ``NeuronActivations.load`` reads back."""
        store = ItemStore(directory, kind=_KIND, settings=dict(saved=True, **self._meta()))
        for h in self.hooks:
            store.save(_hook_key(h), self[h].clone())
        store.save(_ROWS, self._index())
        store.finish(self._meta())
        return store.root

    @classmethod
    def load(cls, directory: str | Path) -> NeuronActivations:
        """Open a finished store (from ``save`` or ``collect_activations(out=...)``)."""
        directory = Path(directory)
        stored = read_index(directory)
        if stored.get("kind") != _KIND:
            raise StoreMismatchError(
                f"{directory} holds a {stored.get('kind')!r} store, not activations"
            )
        if not stored.get("complete"):
            raise StoreMismatchError(
                f"{directory} holds an unfinished collection: rerun collect_activations with "
                "the same texts and out= to finish it"
            )
        store = ItemStore(directory, kind=_KIND, settings=stored.get("settings", {}))
        damaged = [k for k in [_ROWS, *(_hook_key(h) for h in stored["meta"]["hooks"])]
                   if not store.verify(k)]  # fmt: skip
        if damaged:
            raise StoreMismatchError(
                f"{directory} is damaged ({', '.join(damaged)} missing or failing its checksum): "
                "rerun collect_activations with the same texts and out= to recompute it"
            )
        index = store.load(_ROWS)
        meta = stored["meta"]
        meta["hooks"] = tuple(meta["hooks"])
        return cls(**meta, **index, _dir=str(directory))

    def _meta(self) -> dict[str, Any]:
        return dict(
            hooks=list(self.hooks),
            pooling=self.pooling,
            n_examples=self.n_examples,
            model_name=self.model_name,
        )

    def _index(self) -> dict[str, Tensor]:
        return dict(
            example_idx=self.example_idx,
            position=self.position,
            token_ids=self.token_ids,
            n_tokens=self.n_tokens,
        )

    def __repr__(self) -> str:
        where = f"on disk at {self._dir}" if self._dir else "in memory"
        return (
            f"NeuronActivations({self.n_examples} texts, {self.n_rows} rows, "
            f"pooling={self.pooling!r}, {len(self.hooks)} hooks, {where})"
        )


def _layer_of(hook: str) -> int:
    m = _LAYER_RE.match(hook)
    return int(m.group(1)) if m else -1


def _hook_key(hook: str) -> str:
    return f"hook.{hook}"


def _texts_of(dataset: Any) -> list[str]:
    if isinstance(dataset, str):
        raise ArgumentTypeError(
            f"collect_activations(): dataset is one string ({dataset[:40]!r}); it would be read "
            f"character by character: pass a list of texts, e.g. [{dataset[:20]!r}]"
        )
    texts = list(getattr(dataset, "texts", dataset))
    if not texts:
        raise EmptyInputError("the dataset has no texts: pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ArgumentTypeError(f"text {i} is a {type(text).__name__}, not a str")
        if not text.strip():
            raise EmptyInputError(
                f"text {i} is empty or whitespace: it has no tokens to read activations from; "
                "remove it from the dataset"
            )
    return texts


def _check_hooks(model: Model, hooks: Sequence[str] | None) -> tuple[str, ...]:
    if hooks is None:
        return tuple(hook_names(model, "mlp_post"))
    if isinstance(hooks, str):
        hooks = [hooks]
    if not hooks:
        raise EmptyInputError("hooks is empty: name at least one hook point")
    import difflib  # noqa: PLC0415

    for name in hooks:
        if name not in model.hook_dict:
            close = difflib.get_close_matches(name, list(model.hook_dict), n=5)
            raise MissingHookError(f"the model has no hook point {name!r}; closest: {close}")
    if len(set(hooks)) != len(hooks):
        raise ArgumentError(f"hooks has duplicates: {list(hooks)}")
    return tuple(hooks)


def _tokenize(
    model: Model, texts: list[str], max_tokens: int | None
) -> tuple[list[Tensor], int, int]:
    """Token ids of each text (with the model's BOS if it uses one), truncated to max_tokens and
    to the model's context (``to_tokens`` would cut at the context without a word; the caller
    warns with the count)."""
    n_ctx = context_length(model)
    limits = [x for x in (max_tokens, n_ctx) if x is not None]
    limit = min(limits) if limits else None
    rows = []
    n_truncated = 0
    for text in texts:
        ids = model.to_tokens(text, truncate=False)[0].cpu()
        if limit is not None and ids.shape[0] > limit:
            ids = ids[:limit]
            n_truncated += 1
        rows.append(ids)
    n_bos = 1 if bool(model.cfg.default_prepend_bos) else 0
    for i, ids in enumerate(rows):
        if ids.shape[0] <= n_bos:
            raise EmptyInputError(f"text {i} ({texts[i]!r}) has no tokens besides BOS")
    return rows, n_bos, n_truncated


def _texts_sha256(texts: list[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(hashlib.sha256(text.encode()).digest())
    return h.hexdigest()


def _pool(
    act: Tensor, lengths: Tensor, n_bos: int, pooling: Pooling, hook: str = ""
) -> Float[Tensor, "rows d"]:
    """Pool the real tokens (BOS and right padding excluded) of each batch row."""
    if act.ndim != 3:
        raise ArgumentError(
            f"hook {hook!r} gives activations of shape {tuple(act.shape)}, not [batch, pos, d]: "
            "collect_activations reads per-token vectors (mlp_post, resid_post, attn_out, ...); "
            "per-head hooks (hook_q, hook_z, hook_pattern) are not supported"
        )
    pos = torch.arange(act.shape[1], device=act.device)
    real = (pos[None, :] >= n_bos) & (pos[None, :] < lengths[:, None])  # (batch, pos)
    if pooling == "last":
        return act[torch.arange(act.shape[0], device=act.device), lengths - 1].float()
    if pooling == "none":
        return act[real].float()  # (real tokens in row-major order, d)
    if pooling == "mean":
        w = real.to(act.dtype)[..., None]
        return ((act * w).sum(1).float() / (lengths - n_bos)[:, None].float()).float()
    masked = act.masked_fill(~real[..., None], float("-inf"))
    return masked.max(dim=1).values.float()


class _AllHooksFired(Exception):
    """Raised by the last hook to fire: the forward pass has nothing left to give."""


@torch.no_grad()
def _run_chunk(
    model: Model,
    rows: list[Tensor],
    hooks: tuple[str, ...],
    n_bos: int,
    pooling: Pooling,
    batch_size: int,
    dtype: torch.dtype,
    bar: Any,
) -> dict[str, Tensor]:
    """Pooled rows of every hook for one chunk of texts, in the chunk's order."""
    order = sorted(range(len(rows)), key=lambda i: rows[i].shape[0])  # short with short
    parts: dict[str, list[Tensor]] = {h: [] for h in hooks}
    batch_ids: list[list[int]] = []
    pad_id = 0
    device = input_device(model)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        lengths = torch.tensor([rows[i].shape[0] for i in idx])
        tokens = torch.full((len(idx), int(lengths.max())), pad_id, dtype=torch.long)
        for b, i in enumerate(idx):
            tokens[b, : lengths[b]] = rows[i]
        lengths_dev = lengths.to(device)
        fired: dict[str, Tensor] = {}

        def make_hook(name: str, fired: dict[str, Tensor], lengths: Tensor) -> Any:
            def hook(act: Tensor, hook: Any) -> None:
                fired[name] = _pool(act, lengths, n_bos, pooling, name).to("cpu", dtype)
                if len(fired) == len(hooks):
                    raise _AllHooksFired  # skip the rest of the model (and the unembedding)

            return hook

        try:
            with model.hooks(fwd_hooks=[(h, make_hook(h, fired, lengths_dev)) for h in hooks]):
                model(tokens.to(device), return_type=None)
        except _AllHooksFired:
            pass
        missing = [h for h in hooks if h not in fired]
        if missing:
            raise MissingHookError(f"these hooks never fired during the forward pass: {missing}")
        for h in hooks:
            parts[h].append(fired[h])
        batch_ids.append(idx)
        bar.update(int(lengths.sum()))
    # undo the length sort: rows back in chunk order
    flat = [i for idx in batch_ids for i in idx]
    if pooling == "none":
        sizes = [rows[i].shape[0] - n_bos for i in flat]
        out = {}
        for h in hooks:
            pieces = torch.cat(parts[h]).split(sizes)
            ordered = [None] * len(rows)
            for i, piece in zip(flat, pieces, strict=True):
                ordered[i] = piece
            out[h] = torch.cat(ordered)  # type: ignore[arg-type]
        return out
    inverse = torch.empty(len(flat), dtype=torch.long)
    inverse[torch.tensor(flat)] = torch.arange(len(flat))
    return {h: torch.cat(parts[h])[inverse] for h in hooks}


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _chunk_work(model: Model, payload: dict[str, Any]) -> dict[str, Tensor]:
    """The pooled rows of one chunk of texts (the runners' unit of work)."""
    return _run_chunk(
        model,
        payload["rows"],
        payload["hooks"],
        payload["n_bos"],
        payload["pooling"],
        payload["batch_size"],
        payload["dtype"],
        _NoBar(),
    )


def _row_index(
    rows: list[Tensor], n_bos: int, pooling: Pooling
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n_tokens = torch.tensor([r.shape[0] - n_bos for r in rows])
    if pooling == "none":
        example_idx = torch.repeat_interleave(torch.arange(len(rows)), n_tokens)
        position = torch.cat([torch.arange(n_bos, r.shape[0]) for r in rows])
        token_ids = torch.cat([r[n_bos:] for r in rows])
    else:
        example_idx = torch.arange(len(rows))
        position = torch.full((len(rows),), -1)
        token_ids = torch.stack([r[-1] for r in rows])
    return example_idx, position, token_ids, n_tokens


@checked
def collect_activations(
    model: Model,
    dataset: Any,
    *,
    hooks: str | Sequence[str] | None = None,
    pooling: Pooling = "mean",
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
    max_tokens: int | None = 512,
    out: str | Path | None = None,
    chunk_size: int = 1024,
    progress: bool = True,
    desc: str = "collecting activations",
    runner: Runner | None = None,
) -> NeuronActivations:
    """Run ``model`` over ``dataset`` (texts, or an object with ``.texts``) and pool each hook.

    Returns a ``NeuronActivations``; ``acts[layer]`` (or ``acts[hook_name]``) is the
    ``[example, neuron]`` matrix. Texts longer than ``max_tokens`` tokens are truncated (a
    warning says how many). With ``out=`` a directory, chunks of ``chunk_size`` texts are written
    as they finish and a rerun resumes; a directory holding other texts or options raises.
    ``runner=mechlin.RayRunner(...)`` sends the chunks to Ray workers (the same rows).

    >>> import mechlin
    >>> model = mechlin.tiny_model()
    >>> acts = collect_activations(model, ["a cat sat", "the dog ran away"], progress=False)
    >>> acts[0].shape == (2, model.cfg.d_mlp)
    True
    """
    texts = _texts_of(dataset)
    hook_list = _check_hooks(model, hooks)
    if pooling not in ("mean", "max", "last", "none"):
        raise ArgumentError(f"pooling must be 'mean', 'max', 'last' or 'none', not {pooling!r}")
    if batch_size < 1 or chunk_size < 1:
        raise ArgumentError("batch_size and chunk_size must be positive")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ArgumentError(f"dtype must be a floating dtype, not {dtype}")
    rows, n_bos, n_truncated = _tokenize(model, texts, max_tokens)
    if n_truncated:
        import logging  # noqa: PLC0415

        logging.getLogger(__name__).warning(
            "%d of %d texts were longer than max_tokens=%s or the model's context (%s tokens) "
            "and were truncated",
            n_truncated,
            len(texts),
            max_tokens,
            context_length(model),
        )
    example_idx, position, token_ids, n_tokens = _row_index(rows, n_bos, pooling)
    meta = dict(
        hooks=list(hook_list),
        pooling=pooling,
        n_examples=len(texts),
        model_name=str(getattr(model.cfg, "model_name", "")),
    )
    chunks = [range(s, min(s + chunk_size, len(rows))) for s in range(0, len(rows), chunk_size)]
    options = dict(hooks=hook_list, n_bos=n_bos, pooling=pooling, batch_size=batch_size)
    items = [
        Item(
            f"chunks/{c:06d}",
            dict(options, rows=[rows[i] for i in chunk], dtype=dtype),
            size=int(sum(rows[i].shape[0] for i in chunk)),
        )
        for c, chunk in enumerate(chunks)
    ]
    runner = as_runner(runner)
    if out is None:
        got = runner.map(model, _chunk_work, items, progress=progress, desc=desc, unit="tok")
        data = {h: torch.cat([got[item.key][h] for item in items]) for h in hook_list}
        return NeuronActivations(
            hooks=hook_list,
            pooling=pooling,
            n_examples=len(texts),
            model_name=str(meta["model_name"]),
            example_idx=example_idx,
            position=position,
            token_ids=token_ids,
            n_tokens=n_tokens,
            _data=data,
        )
    settings = dict(
        meta,
        texts_sha256=_texts_sha256(texts),
        model=model_fingerprint(model),
        dtype=str(dtype),
        max_tokens=max_tokens,
        chunk_size=chunk_size,
        format=_FORMAT,
    )
    store = ItemStore(out, kind=_KIND, settings=settings)
    index = dict(example_idx=example_idx, position=position, token_ids=token_ids, n_tokens=n_tokens)
    _store_chunks(store, items, hook_list, meta, index, lambda todo: runner.map(
        model, _chunk_work, todo, store=store, progress=progress, desc=desc, unit="tok"
    ))  # fmt: skip
    return NeuronActivations.load(store.root)


def _store_chunks(
    store: ItemStore,
    items: list[Item],
    hooks: tuple[str, ...],
    meta: dict[str, Any],
    index: dict[str, Tensor],
    compute: Callable[[list[Item]], Any],
) -> None:
    """Have every chunk computed into the store (the runner skips those already there and
    waits for those another writer holds), then write one file per hook."""
    finished = [_hook_key(h) for h in hooks] + [_ROWS]
    if store.complete:
        if all(store.verify(k) for k in finished):
            return
        store.reopen()  # a damaged file of a finished store: collect again
    if read_index(store.root).get("complete"):
        return  # another writer finished the whole store meanwhile
    compute(items)
    while not store.claim("finish"):  # another writer is writing the hook files
        if _wait_until_complete(store):
            return
    try:
        if read_index(store.root).get("complete"):
            return  # another writer finished it between our last chunk and our claim
        keys = [item.key for item in items]
        for h in hooks:  # one hook at a time: memory holds one [row, neuron] matrix
            store.save(_hook_key(h), torch.cat([store.load(k, mmap=True)[h] for k in keys]))
        store.save(_ROWS, index)
        store.finish(meta)
        shutil.rmtree(store.root / "chunks", ignore_errors=True)
    finally:
        store.release("finish")


def _wait_until_complete(store: ItemStore, *, poll_s: float = 0.2) -> bool:
    """Wait while another live writer finishes the store: True once it is complete, False if
    that writer died first (the caller finishes it)."""
    import time  # noqa: PLC0415

    while store.claimed("finish"):
        time.sleep(poll_s)
    stored = read_index(store.root)
    return bool(stored.get("complete"))
