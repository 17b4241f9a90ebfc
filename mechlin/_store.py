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

Several writers may share a store (two processes, or the workers of a cluster on a shared
filesystem): a writer ``claim``s an item before computing it (an exclusive-create lock file
naming its host and process), so two live writers never compute the same item; a claim whose
process has died is stale and is taken over; ``wait_for`` waits for an item another live writer
is computing. A claim of another host cannot be checked from here: the driver of a cluster run,
which learns when one of its workers dies, removes that worker's claims (``break_claim``).

Each item is checksummed (SHA-256 beside it, as the model cache does): ``get`` verifies an item
before it is used, and a damaged or truncated one is reported (a warning naming the file) and
treated as missing, so the caller recomputes it. Callers put ``model_fingerprint(model)`` in the
settings, so a store computed with other weights (another checkpoint of the same name, another
dtype) or another tokenizer is refused rather than silently reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mechlin._cache import sha256_file
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
        if self.root.exists() and not self.root.is_dir():
            raise StoreMismatchError(
                f"out={str(self.root)!r} is a file, not a directory: pass a directory for the store"
            )
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

    def _sum_path(self, key: str) -> Path:
        return self.root / f"{key}.sha256"

    def has(self, key: str) -> bool:
        """Whether item ``key`` is there (complete, with its checksum); ``get`` verifies it."""
        return self.path(key).exists() and self._sum_path(key).exists()

    def verify(self, key: str) -> bool:
        """Whether item ``key`` exists and matches its checksum; a damaged item is removed."""
        if not self.has(key):
            return False
        if sha256_file(self.path(key)) == self._sum_path(key).read_text().strip():
            return True
        warnings.warn(
            f"{self.path(key)} is damaged (its checksum does not match): it is recomputed",
            stacklevel=3,
        )
        self.path(key).unlink(missing_ok=True)
        self._sum_path(key).unlink(missing_ok=True)
        return False

    def get(self, key: str, *, mmap: bool = False) -> Any | None:
        """Item ``key`` if it is there and undamaged, else ``None`` (the caller recomputes it)."""
        if not self.verify(key):
            return None
        return self.load(key, mmap=mmap)

    def load(self, key: str, *, mmap: bool = False) -> Any:
        """Item ``key`` without verifying it (``get`` verifies)."""
        return torch.load(self.path(key), weights_only=True, mmap=mmap)

    def save(self, key: str, item: Any) -> None:
        """Write one item and its checksum atomically (it exists only once complete)."""
        with atomic_write(self.path(key)) as tmp:
            torch.save(item, tmp)
            digest = sha256_file(tmp)
        with atomic_write(self._sum_path(key)) as tmp:
            tmp.write_text(digest)

    # --- several writers ------------------------------------------------------------------

    def _claim_path(self, key: str) -> Path:
        return self.root / f"{key}.claim"

    def claim(self, key: str) -> bool:
        """Claim item ``key`` for this process; False if another live writer holds it.

        The claim is a file created exclusively (``O_EXCL``), so of two writers racing for one
        item exactly one wins. A claim left by a process that no longer runs (on this host) is
        stale: it is removed and claimed again.
        """
        path = self._claim_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale(path):
                    return False
                path.unlink(missing_ok=True)  # a killed writer's claim: take it over
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
            return True
        return False

    def release(self, key: str) -> None:
        """Give up the claim on item ``key`` (after saving it, or after a failure)."""
        self._claim_path(key).unlink(missing_ok=True)

    def break_claim(self, key: str, owner: dict[str, Any]) -> bool:
        """Remove the claim on ``key`` if ``owner`` (``{"host", "pid"}``: a writer known to be
        dead, on any host) holds it; whether it did."""
        path = self._claim_path(key)
        try:
            held = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        if held.get("host") != owner.get("host") or held.get("pid") != owner.get("pid"):
            return False
        path.unlink(missing_ok=True)
        return True

    def claimed(self, key: str) -> bool:
        """Whether a live writer other than this process holds item ``key``."""
        path = self._claim_path(key)
        return path.exists() and not self._stale(path) and not self._mine(path)

    def _mine(self, path: Path) -> bool:
        try:
            owner = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return bool(owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid())

    def _stale(self, path: Path) -> bool:
        try:
            owner = json.loads(path.read_text())
        except FileNotFoundError:
            return False  # released meanwhile: not stale, just gone
        except (OSError, ValueError):
            # being written this instant, or garbage: stale only once it is old
            try:
                return time.time() - path.stat().st_mtime > 60
            except FileNotFoundError:
                return False
        if owner.get("host") != socket.gethostname():
            return False  # another host's writer: it cannot be checked from here; trust it
        return not _alive(int(owner.get("pid", -1)))

    def wait_for(self, key: str, *, poll_s: float = 0.2) -> Any | None:
        """Item ``key`` once the writer holding it has saved it; None if its claim went stale
        (that writer died: the caller computes the item itself)."""
        while True:
            item = self.get(key)
            if item is not None:
                return item
            if not self.claimed(key):
                return self.get(key)
            time.sleep(poll_s)

    def finished_elsewhere(self) -> bool:
        """Whether another writer marked this store complete after it was opened here (its
        items may then have been merged and removed: nothing is left to compute)."""
        return not self.complete and bool(read_index(self.root).get("complete"))

    def reopen(self) -> None:
        """Mark a complete store unfinished again (one of its items was damaged)."""
        self.complete = False
        self._write_index()

    def finish(self, meta: dict[str, Any]) -> None:
        """Mark the store complete, with ``meta`` describing its contents."""
        self.meta, self.complete = meta, True
        self._write_index()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@torch.no_grad()
def model_fingerprint(model: Any) -> str:
    """A cheap hash of what a store's results depend on: the weights and the tokenizer.

    Every parameter's name, shape and dtype, the bytes of the first and last parameter and of a
    strided sample of every parameter, and the tokenizer's vocabulary. Two checkpoints of one
    architecture (a fine-tune, another seed or dtype) differ here.
    """
    h = hashlib.sha256()
    params = list(model.named_parameters())
    for i, (name, p) in enumerate(params):
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        flat = p.detach().reshape(-1)
        sample = flat if i in (0, len(params) - 1) else flat[:: max(1, flat.numel() // 64)]
        h.update(sample.float().cpu().numpy().tobytes())
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    return h.hexdigest()[:32]


def read_index(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The index of a store directory; ``NotAStoreError`` if it has none."""
    path = Path(root) / INDEX
    if not path.exists():
        raise NotAStoreError(f"{root} is not a mechlin store (no {INDEX})")
    return dict(json.loads(path.read_text()))
