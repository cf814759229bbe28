"""Maildir intake: how job files reach the daemon, and how it refuses the bad ones without crashing.

Writers put ``spool/tmp/<x>.part``, fsync it and rename it into ``spool/new/<x>.toml`` (a rename is atomic,
so the daemon never sees half a file there).  A plain file copied straight into ``spool/`` is accepted too,
but only once it has stopped changing (same size, mtime and inode over two scans at least ``settle_s``
apart).  The daemon claims a file by renaming it into ``spool/cur/``: when two claimants race, the loser
gets FileNotFoundError.  A claimed file that cannot become a job moves to ``spool/rejected/<x>`` with
``<x>.error`` beside it saying why.
"""

from __future__ import annotations

import os
import re
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from wanlora.daemon.home import DaemonLock, Home

OUR_DIRS = ("tmp", "new", "cur", "rejected")
IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".swp", "~")
SAFE = re.compile(r"[^A-Za-z0-9._-]+")
SID_RE = re.compile(r"^[0-9a-f]{32}$")
SID_IN_NAME = re.compile(r"-(?P<sid>[0-9a-f]{32})\.toml(\.\d+)?$")


def new_submission_id() -> str:
    """A client-chosen id for one submission: the daemon queues a job at most once per id, across restarts."""
    return uuid.uuid4().hex


def submission_id_of(name: str) -> str | None:
    """The submission id in a spool file name (``<stem>-<stamp>-<sid>.toml``), or None for a plain drop."""
    m = SID_IN_NAME.search(name)
    return m.group("sid") if m else None


class Rejected(Exception):
    """This spool file cannot become a job; the message is written to ``<x>.error``."""


def safe_name(name: str, limit: int = 96) -> str:
    """A file-system-safe, bounded version of a name found in the spool (names may hold anything)."""
    s = SAFE.sub("_", name).lstrip(".") or "job"
    return s[:limit]


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def submit_file(home: Path | Home | str | None, path_or_text: Path | str, *, name: str | None = None,
                submission_id: str | None = None) -> Path:
    """Drop a job into the spool the Maildir way; returns its path in ``spool/new``.

    ``path_or_text`` is a job file's path (a :class:`Path`) or its TOML text (a ``str``).  Works whether
    or not the daemon runs: it picks the file up when it (re)starts.  The file name carries the
    submission id (a new one unless given), which the daemon de-duplicates on.
    """
    sid = submission_id or new_submission_id()
    if not SID_RE.match(sid):
        raise ValueError(f"submission id {sid!r} is not 32 lowercase hex digits")
    h = home if isinstance(home, Home) else Home.resolve(home)
    h.ensure_spool()
    if isinstance(path_or_text, Path):
        data = path_or_text.read_bytes()
        stem = name or path_or_text.stem
    else:
        data = path_or_text.encode("utf-8")
        stem = name or "job"
    base = f"{safe_name(Path(stem).stem, 64)}-{time.strftime('%Y%m%d-%H%M%S')}-{sid}"
    tmp = h.spool_tmp / f"{base}.part"
    final = h.spool_new / f"{base}.toml"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)
    except OSError:
        tmp.unlink(missing_ok=True)  # half a job file on a full disk: not left behind
        raise
    _fsync_dir(h.spool_new)
    return final


def find_submission(home: Home, sid: str) -> tuple[str, Path] | None:
    """Where a submission's spool file is: ("pending", path) in new/ or cur/, ("rejected", .error), or None.

    new/ is looked at before cur/ (a file moves new → cur → gone), so a concurrent claim is never missed;
    the caller looks in the queue after this and at rejected/ last.
    """
    for d in (home.spool_new, home.spool_cur):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            if sid in n and not n.startswith("."):
                return "pending", d / n
    return None


def withdraw(home: Home, files: list[Path]) -> list[Path]:
    """Take job files back out of the spool before any daemon queues them; returns those taken.

    Only while no daemon runs: this holds ``daemon.lock`` meanwhile (raises :class:`AlreadyRunning` when a daemon
    has it), so no intake is reading a file in ``cur/`` and none can start until it is done.  Each file is claimed
    the way intake claims it, by a rename (here into ``tmp/``, which intake never reads), then deleted: a file
    that is no longer there was taken by someone else and is not reported.
    """
    lock = DaemonLock(home)
    lock.acquire()
    try:
        taken: list[Path] = []
        home.spool_tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        for p in files:
            aside = home.spool_tmp / f".withdrawn-{time.time_ns()}-{safe_name(p.name)}"
            try:
                os.rename(p, aside)
            except FileNotFoundError:
                continue
            aside.unlink(missing_ok=True)
            _fsync_dir(p.parent)
            taken.append(p)
        return taken
    finally:
        lock.release()


def find_rejection(home: Home, sid: str) -> Path | None:
    """The ``.error`` file of a rejected submission, if any."""
    try:
        names = sorted(os.listdir(home.spool_rejected))
    except OSError:
        return None
    for n in names:
        if sid in n and n.endswith(".error"):
            return home.spool_rejected / n
    return None


@dataclass
class _Seen:
    sig: tuple[int, int, int]  # size, mtime_ns, inode
    since: float  # monotonic time the signature was first seen


@dataclass
class Spool:
    """Finds spool files that are ready, claims them, reads them safely, and rejects them with a reason."""

    home: Home
    settle_s: float = 1.0
    max_bytes: int = 50 * 1024 * 1024
    _drops: dict[str, _Seen] = field(default_factory=dict)

    # ---- finding
    def leftovers(self) -> list[Path]:
        """Files claimed by a daemon that died before finishing them (re-processed at start)."""
        return sorted(self._entries(self.home.spool_cur))

    def ready(self) -> list[Path]:
        """``new/`` entries (complete by protocol) and settled plain drops in ``spool/``, oldest first."""
        out = list(self._entries(self.home.spool_new))
        now = time.monotonic()
        alive: set[str] = set()
        for p in self._entries(self.home.spool, skip=OUR_DIRS):
            if p.name.endswith(IN_PROGRESS_SUFFIXES):
                continue
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            alive.add(p.name)
            sig = (st.st_size, st.st_mtime_ns, st.st_ino)
            seen = self._drops.get(p.name)
            if seen is None or seen.sig != sig:
                self._drops[p.name] = _Seen(sig, now)  # new or still changing: look again later
                continue
            if now - seen.since >= self.settle_s:
                out.append(p)
        for gone in set(self._drops) - alive:
            del self._drops[gone]
        return sorted(out, key=_mtime)

    def pending_drops(self) -> float | None:
        """Seconds until the earliest unsettled drop could settle (the main loop rescans then)."""
        if not self._drops:
            return None
        now = time.monotonic()
        return max(0.05, min(self.settle_s - (now - s.since) for s in self._drops.values()))

    @staticmethod
    def _entries(d: Path, skip: tuple[str, ...] = ()) -> list[Path]:
        try:
            names = os.listdir(d)
        except OSError:
            return []
        return [d / n for n in names if not n.startswith(".") and n not in skip]

    # ---- claiming
    def claim(self, path: Path) -> Path | None:
        """Rename ``path`` into ``spool/cur``; None when another claimant got it first."""
        self._drops.pop(path.name, None)
        target = self.home.spool_cur / f"{time.time_ns()}-{safe_name(path.name)}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None
        return target

    # ---- reading
    def read(self, claimed: Path) -> str:
        """The claimed file's text, or :class:`Rejected` for anything that is not a small UTF-8 text file."""
        try:
            st = claimed.lstat()
        except FileNotFoundError:
            raise Rejected("the file disappeared while it was being read") from None
        if stat.S_ISLNK(st.st_mode):
            raise Rejected("it is a symbolic link; the spool accepts only regular files (copy the job file in)")
        if stat.S_ISDIR(st.st_mode):
            raise Rejected("it is a directory, not a job file")
        if not stat.S_ISREG(st.st_mode):
            raise Rejected("it is not a regular file (a FIFO, socket or device)")
        if st.st_size > self.max_bytes:
            raise Rejected(f"it is {st.st_size / 1e6:.1f} MB; a job file is a few KB (limit {self.max_bytes / 1e6:.0f} MB)")
        try:
            fd = os.open(claimed, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise Rejected(f"cannot open it ({e.strerror})") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise Rejected("it is not a regular file")
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise Rejected(f"it is larger than {self.max_bytes / 1e6:.0f} MB; a job file is a few KB")
        if not data.strip():
            raise Rejected("it is empty")
        if b"\x00" in data:
            raise Rejected("it contains NUL bytes: a binary file, not a TOML job file")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Rejected(f"it is not UTF-8 text (invalid byte at offset {e.start}); save the job file as UTF-8") from None

    # ---- rejecting
    def reject(self, claimed: Path, original: str, reason: str) -> Path:
        """Move the claimed file to ``spool/rejected/`` with ``<x>.error`` beside it; returns the .error path."""
        name = safe_name(original)
        target = self.home.spool_rejected / name
        n = 1
        while target.exists() or target.is_symlink() or Path(f"{target}.error").exists():
            target = self.home.spool_rejected / f"{name}.{n}"
            n += 1
        try:
            os.rename(claimed, target)
        except FileNotFoundError:
            pass
        err = Path(f"{target}.error")
        text = f"{original!r} was rejected at {time.strftime('%Y-%m-%d %H:%M:%S')}:\n{reason.rstrip()}\n"
        tmp = self.home.spool_rejected / f".{err.name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, err)
        return err


def original_name(claimed: Path) -> str:
    """The name a claimed file had in the spool (``cur/<ns>-<name>``)."""
    head, sep, rest = claimed.name.partition("-")
    return rest if sep and head.isdigit() else claimed.name


def _mtime(p: Path) -> float:
    try:
        return p.lstat().st_mtime
    except OSError:
        return 0.0
