"""Running out of disk: name the path and the free space, and keep a little room to record the failure.

A full disk is an ordinary event on a rented GPU box (a 20 GB container disk and a few checkpoints).
The daemon keeps a small reserve file in its home; when SQLite or a job-folder write fails with
ENOSPC it deletes the reserve (so the failure itself can be written down), and re-creates it once
there is room again.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

RESERVE_BYTES = 4 * 1024 * 1024
LOW_BYTES = 64 * 1024 * 1024  # below this, a trainer that died is assumed to have died of the full disk


def free_bytes(path: Path | str) -> int | None:
    """Free bytes (for this user) on the file system holding ``path`` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def describe_free(path: Path | str) -> str:
    """'0.0 MB free of 16.0 MB' for the file system holding ``path``."""
    free = free_bytes(path)
    if free is None:
        return "free space unknown"
    try:
        total = shutil.disk_usage(Path(path) if Path(path).exists() else Path(path).parent).total
        return f"{free / 1e6:.1f} MB free of {total / 1e6:.1f} MB"
    except OSError:
        return f"{free / 1e6:.1f} MB free"


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


class Reserve:
    """A file of ``size`` bytes the daemon can delete to get room for its own last writes."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size

    def ensure(self) -> bool:
        """(Re)create the reserve when there is room for it and more; True when it exists."""
        try:
            if self.path.stat().st_size >= self.size:
                return True
        except FileNotFoundError:
            pass
        free = free_bytes(self.path.parent)
        if free is None or free < 4 * self.size:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
            finally:
                os.close(fd)
        except OSError:
            self.path.unlink(missing_ok=True)
            return False
        return True

    def release(self) -> bool:
        """Delete the reserve; True if there was one (so a retry may now succeed)."""
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False
