"""An on-disk cache of directories that are written atomically and verified before every use.

A cache entry is a directory holding a ``manifest.json`` that lists every other file with its
size and SHA-256. The entry is built in a temporary sibling directory and renamed into place
only when complete, so a reader never sees half an entry. Before use, every file is checked
against the manifest; an entry that fails (missing file, wrong size, wrong hash, unreadable
manifest) is reported as damaged and rebuilt, never loaded.

Hashing a gigabyte of weights takes most of a second, on every load. So a full check that
passes records each file's ``stat`` (size, mtime, ctime, inode, device) in ``.verified.json``;
a later check hashes only the files whose ``stat`` differs, as ``git status`` does. Any write
to a file through the file system changes its ctime, which no program can set back. Files
changed too close to the moment the record was written are never recorded, because timestamps
are coarse (a write in the same tick would keep them): ``_RACY_NS``, as in "racy git". A
directory the process cannot write to is hashed in full every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

from mechlin.errors import CacheError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_STAMP = ".verified.json"
# A file whose mtime or ctime is within this of the record's writing is not recorded (see above).
_RACY_NS = 2_000_000_000
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


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _read_stamp(directory: Path, manifest_text: str) -> dict[str, list[int]]:
    """The files a full check found sound, by ``stat``, if the record is for this manifest."""
    try:
        stamp = json.loads((directory / _STAMP).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stamp, dict) or stamp.get("manifest_sha256") != _text_sha256(manifest_text):
        return {}
    files = stamp.get("files")
    return files if isinstance(files, dict) else {}


def _write_stamp(directory: Path, manifest_text: str, names: list[str]) -> None:
    """Record the ``stat`` of the files just hashed and found sound (not the racy ones)."""
    now = time.time_ns()
    files = {}
    for name in names:
        key = _stat_key(directory / name)
        if max(key[1], key[2]) < now - _RACY_NS:
            files[name] = key
    stamp = {"manifest_sha256": _text_sha256(manifest_text), "files": files}
    tmp = directory / f"{_STAMP}.{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(json.dumps(stamp))
        tmp.replace(directory / _STAMP)
    except OSError as e:  # a read-only cache: hashed in full each time
        logger.debug("cannot record the verified cache files in %s (%s)", directory, e)
        tmp.unlink(missing_ok=True)


def _text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def verify(directory: Path, meta: dict[str, str], *, full: bool = False) -> str | None:
    """``None`` if ``directory`` is a complete, undamaged entry for ``meta``, else why not.

    Files whose ``stat`` equals the one recorded by an earlier passing check are not hashed
    again, unless ``full`` (see the module docstring)."""
    try:
        manifest_text = (directory / MANIFEST).read_text()
        manifest = json.loads(manifest_text)
    except FileNotFoundError:
        return "no manifest (interrupted write?)"
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    if not isinstance(manifest, dict):
        return "unreadable manifest (not a JSON object)"
    if manifest.get("format") != _FORMAT or manifest.get("meta") != meta:
        return "manifest is for another source or format"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "manifest lists no files"
    stamp = {} if full else _read_stamp(directory, manifest_text)
    hashed = False
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry.get("size"):
            return f"{name} has the wrong size"
        if stamp.get(name) == _stat_key(path):
            continue
        if sha256_file(path) != entry.get("sha256"):
            return f"{name} does not match its checksum"
        hashed = True
    if hashed or set(stamp) != set(files):
        _write_stamp(directory, manifest_text, list(files))
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
