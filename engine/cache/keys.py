"""Cache keys: what a cached tensor depends on, hashed, so a changed input can never serve a stale entry.

- **Files** are identified by the sha256 of their bytes (a renamed or copied clip hits; an edited one
  misses).  Hashing a large clip again on every run would be wasteful, so :class:`HashIndex` remembers
  each digest under ``(path, size, mtime_ns)`` in ``hashes.json`` and re-reads only changed files.
- **Models** are identified by :func:`model_identity`: the resolved folder, the sub-folder's config
  bytes, each weight file's name, size and mtime (a re-download invalidates), the dtype and any
  variant (quantisation).  Cheap (no 11 GB hash of the text encoder) and never too permissive.
- **Entries** are the sha256 of a canonical JSON of every setting that changes the result
  (:func:`entry_key`); ``FORMAT`` is part of it, so a change to how entries are computed invalidates all.

The cache folder is ``<dataset>/.wanlora_cache`` (shared by every job that uses the folder), or
``<wanlora home>/cache/<hash of the folder path>`` when the dataset folder cannot be written to — also
shared across jobs, and known to ``wanlora cache`` before a job folder exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

FORMAT = 1
CACHE_DIRNAME = ".wanlora_cache"
HASHES = "hashes.json"
_CHUNK = 1 << 22


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temp sibling and rename, so readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class HashIndex:
    """sha256 of files, remembered by ``(path, size, mtime_ns)`` in ``<folder>/hashes.json``."""

    def __init__(self, folder: Path | None) -> None:
        self.path = Path(folder) / HASHES if folder is not None else None
        self.hashed = 0  # files actually read (tests check that unchanged files are not re-read)
        self._lock = threading.Lock()
        self._dirty = False
        self._index: dict[str, list[Any]] = {}
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if isinstance(data, dict):
                    self._index = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 3}
            except (OSError, json.JSONDecodeError):
                self._index = {}

    def digest(self, file: Path) -> str:
        file = Path(file)
        st = file.stat()
        key = str(file.resolve())
        with self._lock:
            hit = self._index.get(key)
            if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                return str(hit[2])
        digest = sha256_file(file)
        with self._lock:
            self.hashed += 1
            self._index[key] = [st.st_size, st.st_mtime_ns, digest]
            self._dirty = True
        return digest

    def save(self) -> None:
        with self._lock:
            if not self._dirty or self.path is None:
                return
            data = json.dumps(self._index, sort_keys=True).encode()
            self._dirty = False
        write_bytes_atomic(self.path, data)


def model_identity(root: Path, subfolders: list[str], *, dtype: str, variant: str = "") -> str:
    """A short id of a model component as loaded: folder, configs, weight files (name/size/mtime), dtype."""
    h = hashlib.sha256()
    root = Path(root).resolve()
    h.update(json.dumps([FORMAT, str(root), dtype, variant]).encode())
    for sub in subfolders:
        folder = root / sub
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        for p in files:
            st = p.stat()  # follows hub-cache symlinks to the blob
            if p.suffix in (".json", ".txt", ".model"):
                h.update(f"{sub}/{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()}".encode())
            else:
                h.update(f"{sub}/{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def entry_key(**fields: Any) -> str:
    """sha256 of the canonical JSON of ``fields`` (plus :data:`FORMAT`)."""
    payload = json.dumps({"format": FORMAT, **fields}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _writable_dir(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def cache_dir_for(dataset_folder: Path | str, fallback_root: Path | None = None, *, only_root: bool = False) -> Path:
    """``<dataset>/.wanlora_cache``, or ``<fallback_root>/<hash of the folder>`` if that cannot be written.

    ``fallback_root`` defaults to ``<wanlora home>/cache``; ``only_root`` never writes beside the dataset
    (``wanlora trial`` keeps its random-weight entries out of the user's folders).
    """
    folder = Path(dataset_folder).expanduser().resolve()
    beside = folder / CACHE_DIRNAME
    if not only_root and _writable_dir(beside):
        return beside
    if fallback_root is None:
        from wanlora.engine.config.paths import wanlora_home

        fallback_root = wanlora_home() / "cache"
    tag = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    out = Path(fallback_root) / f"{folder.name}-{tag}"
    out.mkdir(parents=True, exist_ok=True)
    return out
