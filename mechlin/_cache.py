"""An on-disk cache of directories that are written atomically and verified before every use.

A cache entry is a directory holding a ``manifest.json`` that lists every other file with its
size and SHA-256. The entry is built in a temporary sibling directory and renamed into place
only when complete, so a reader never sees half an entry. Before use, every file is checked
against the manifest; an entry that fails (missing file, wrong size, wrong hash, unreadable
manifest) is reported as damaged and rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

from mechlin.errors import CacheError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_FORMAT = 1
_ENV_VAR = "MECHLIN_CACHE"


def cache_root() -> Path:
    """The cache directory: ``$MECHLIN_CACHE`` if set, else ``~/.cache/mechlin``."""
    env = os.environ.get(_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mechlin"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 16 MiB blocks (the cache's and the stores' checksum)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(directory: Path, meta: dict[str, str]) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format": _FORMAT, "meta": meta, "files": files}
    path = directory / MANIFEST
    with path.open("w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def verify(directory: Path, meta: dict[str, str]) -> str | None:
    """``None`` if ``directory`` is a complete, undamaged entry for ``meta``, else why not."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest (interrupted write?)"
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    if manifest.get("format") != _FORMAT or manifest.get("meta") != meta:
        return "manifest is for another source or format"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "manifest lists no files"
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry.get("size"):
            return f"{name} has the wrong size"
        if sha256_file(path) != entry.get("sha256"):
            return f"{name} does not match its checksum"
    return None


def cached_dir(key: str, meta: dict[str, str], build: Callable[[Path], None]) -> Path:
    """The verified cache directory for ``key``, built by ``build(tmp_dir)`` when needed.

    ``meta`` identifies the source (name, package version, file size, ...): an entry whose
    manifest records other ``meta`` is stale and is rebuilt.
    """
    root = cache_root()
    final = root / key
    if final.exists():
        problem = verify(final, meta)
        if problem is None:
            return final
        warnings.warn(
            f"mechlin: cached weights at {final} are damaged ({problem}); rebuilding them.",
            stacklevel=3,
        )
        _remove(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root, key)
        tmp = root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as e:
        raise CacheError(
            f"mechlin cannot write its model cache at {root} ({e}); set MECHLIN_CACHE to a "
            "writable directory"
        ) from e
    try:
        build(tmp)
        _write_manifest(tmp, meta)
        try:
            tmp.rename(final)
        except OSError:
            # Another process finished first: use its entry if it is sound.
            if verify(final, meta) is not None:
                raise
            _remove(tmp)
    except BaseException:
        _remove(tmp)
        raise
    return final


def _remove_stale(root: Path, key: str, *, older_than_s: float = 6 * 3600) -> None:
    """Remove what a killed build left behind (``.tmp-``/``.trash-`` directories of ``key``).

    Only directories older than ``older_than_s`` are removed, so a build that another process is
    running now is left alone.
    """
    import time  # noqa: PLC0415

    now = time.time()
    for pattern in (f".tmp-{key}-*", f".trash-{key}-*"):
        for path in root.glob(pattern):
            try:
                if now - path.stat().st_mtime > older_than_s:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue


def _remove(path: Path) -> None:
    # Rename first so a concurrent reader never sees a half-deleted entry.
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        path.rename(trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)
