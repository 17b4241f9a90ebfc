"""Atomic writes and the one resumable on-disk store every long analysis writes into.

``atomic_write(path)`` yields a temporary sibling path; the file appears under its real name
only once it is complete (``os.replace``), and a failed write leaves nothing behind.

``ItemStore(root, kind=..., settings=...)`` is a directory of items (one ``torch.save`` file per
key) with an index, ``store.json``, that pins the store's kind and the settings its items were
computed with. Opening a directory that holds another kind of store or other settings raises
``StoreMismatchError`` naming what differs, so a resumed run never mixes results. Items are
written atomically: an interrupted run loses at most the item being computed, and a rerun with
the same settings skips every item already there. The average causal effects keep one item per
fact, the activation collection one per chunk of texts.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mechlin.errors import NotAStoreError, StoreMismatchError

INDEX = "store.json"
_FORMAT = 2


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, sort_keys=True))


class ItemStore:
    """A resumable directory of items, pinned to a kind and settings (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], *, kind: str, settings: dict[str, Any]):
        self.root = Path(root)
        self.kind = kind
        self.settings = json.loads(json.dumps(settings))  # as it reads back (tuples -> lists)
        self.root.mkdir(parents=True, exist_ok=True)
        index = self.root / INDEX
        if index.exists():
            stored = read_index(self.root)
            if stored.get("kind") != kind:
                raise StoreMismatchError(
                    f"{self.root} holds a {stored.get('kind')!r} store, not a {kind!r} one: "
                    "pass another out= directory"
                )
            old = stored.get("settings", {})
            if old != self.settings:
                changed = sorted(
                    k for k in {*old, *self.settings} if old.get(k) != self.settings.get(k)
                )
                raise StoreMismatchError(
                    f"{self.root} holds results computed with other settings "
                    f"({', '.join(changed)}); use a new out= directory, or the same settings "
                    "to resume"
                )
            self.meta: dict[str, Any] = stored.get("meta", {})
            self.complete = bool(stored.get("complete"))
        else:
            self.meta, self.complete = {}, False
            self._write_index()

    def _write_index(self) -> None:
        record = dict(
            format=_FORMAT,
            kind=self.kind,
            settings=self.settings,
            complete=self.complete,
            meta=self.meta,
        )
        write_json(self.root / INDEX, record)

    def path(self, key: str) -> Path:
        """The file of item ``key``."""
        return self.root / f"{key}.pt"

    def has(self, key: str) -> bool:
        return self.path(key).exists()

    def load(self, key: str, *, mmap: bool = False) -> Any:
        return torch.load(self.path(key), weights_only=True, mmap=mmap)

    def save(self, key: str, item: Any) -> None:
        """Write one item atomically (it exists under its name only once complete)."""
        with atomic_write(self.path(key)) as tmp:
            torch.save(item, tmp)

    def finish(self, meta: dict[str, Any]) -> None:
        """Mark the store complete, with ``meta`` describing its contents."""
        self.meta, self.complete = meta, True
        self._write_index()


def read_index(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The index of a store directory; ``NotAStoreError`` if it has none."""
    path = Path(root) / INDEX
    if not path.exists():
        raise NotAStoreError(f"{root} is not a mechlin store (no {INDEX})")
    return dict(json.loads(path.read_text()))
