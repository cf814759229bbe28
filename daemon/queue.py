"""The job queue: one SQLite database in WAL mode (readers never block the daemon's writes).

A full disk must not stop the daemon recording job states, and space it frees elsewhere is taken at once
by whatever filled the disk.  So queue.db keeps its own room, in blocks the file system already gave it:
the WAL file is preallocated past the size ``wal_autocheckpoint`` lets it reach, and the database keeps
free pages (``room`` rows written and deleted) for rows that grow and for the checkpoint to write into.
SQLite then needs no new block for an update (see :meth:`Queue.keep_room`).

States follow Slurm's split of state + reason: ``queued`` (reason: waiting for GPU / held / priority)
→ ``running`` → ``paused`` → ``completed`` | ``failed`` (reason: oom, nan, data, config, crash, killed…)
| ``cancelled``.  Ids are short monotonic integers (AUTOINCREMENT: never reused, even after remove).
Only the daemon writes; ``wanlora status`` may read the file directly when the daemon is down.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

QUEUED, RUNNING, PAUSED, COMPLETED, FAILED, CANCELLED = "queued", "running", "paused", "completed", "failed", "cancelled"
STATES = (QUEUED, RUNNING, PAUSED, COMPLETED, FAILED, CANCELLED)
TERMINAL = (COMPLETED, FAILED, CANCELLED)

REASON_WAITING = "waiting for GPU"
REASON_HELD = "held"
REASON_PRIORITY = "priority"

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    priority INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,
    gpus_req TEXT NOT NULL DEFAULT '"auto"',
    gpus TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    restart_count INTEGER NOT NULL DEFAULT 0,
    fail_streak INTEGER NOT NULL DEFAULT 0,
    saved_step INTEGER NOT NULL DEFAULT 0,
    start_saved_step INTEGER NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    pause_requested INTEGER NOT NULL DEFAULT 0,
    output_dir TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    warnings TEXT NOT NULL DEFAULT '[]',
    submission_id TEXT NOT NULL DEFAULT '',
    submitted_ts REAL NOT NULL,
    started_ts REAL,
    ended_ts REAL,
    updated_ts REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_source ON jobs(source) WHERE source != '';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_submission ON jobs(submission_id) WHERE submission_id != '';
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS room (pad BLOB);
"""
WAL_AUTOCHECKPOINT_PAGES = 100  # a small WAL that is checkpointed and reused early (≈ 400 KB)
WAL_ROOM_BYTES = 1 << 20  # preallocated WAL: ≈ 250 frames, more than the autocheckpoint lets it reach
ROOM_PAGES = 64  # free pages kept inside queue.db (≈ 256 KB): rows that grow, the checkpoint's writes


class QueueError(Exception):
    """A queue operation the user asked for is not possible (message says why)."""


@dataclass
class JobRow:
    id: int
    name: str
    state: str
    reason: str
    message: str
    priority: int
    held: int
    gpus_req: str
    gpus: str
    pid: int | None
    restart_count: int
    fail_streak: int
    saved_step: int
    start_saved_step: int
    step: int
    total_steps: int
    exit_code: int | None
    cancel_requested: int
    pause_requested: int
    output_dir: str
    source: str
    warnings: str
    submission_id: str
    submitted_ts: float
    started_ts: float | None
    ended_ts: float | None
    updated_ts: float

    @property
    def gpus_requested(self) -> Any:
        try:
            return json.loads(self.gpus_req)
        except json.JSONDecodeError:
            return "auto"

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gpus_req"] = self.gpus_requested
        try:
            d["warnings"] = json.loads(self.warnings)
        except json.JSONDecodeError:
            d["warnings"] = []
        d["held"] = bool(self.held)
        d["cancel_requested"] = bool(self.cancel_requested)
        d["pause_requested"] = bool(self.pause_requested)
        return d


_COLUMNS = [f.name for f in fields(JobRow)]
_UPDATABLE = set(_COLUMNS) - {"id", "submitted_ts", "submission_id"}
_ADDED = {"submission_id": "TEXT NOT NULL DEFAULT ''"}  # columns newer than the first queue.db format
_DEFAULTS = {"submission_id": ""}


def disk_full_message(path: Path) -> str:
    """'cannot write PATH: the disk is full (N MB free)' — what a user needs to act on SQLITE_FULL/ENOSPC."""
    from wanlora.daemon.diskspace import describe_free

    return f"cannot write {path}: the disk is full ({describe_free(path)}); free space there"


def _is_full(e: BaseException) -> bool:
    return "full" in str(e).lower() or getattr(e, "errno", None) == 28


class Queue:
    """Thread-safe access to ``queue.db`` (one connection, serialised by a lock).

    ``on_full`` is called once when a write fails because the disk is full (the daemon frees its reserve
    file there) and the write is tried again; a second failure raises :class:`QueueError` naming the path.
    """

    def __init__(self, path: Path, *, readonly: bool = False, on_full: Callable[[], bool] | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self.on_full = on_full
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
        else:
            self._db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            have = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)").fetchall()}
            for col, decl in _ADDED.items():
                if have and col not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {col} {decl}")
            self._db.executescript(SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            for suffix in ("", "-wal", "-shm"):  # owner-only, whatever the umask was
                try:
                    os.chmod(f"{self.path}{suffix}", 0o600)
                except OSError:
                    pass
            self.keep_room()
        self._db.row_factory = sqlite3.Row

    def keep_room(self) -> bool:
        """Make sure queue.db's own files hold the blocks the next updates need; True when they do.

        Cheap (a statvfs, a PRAGMA, a stat), so the daemon calls it on every tick; it makes room only while the
        disk has some to spare, and says False (tried again later) when it cannot.
        """
        wal = Path(f"{self.path}-wal")
        with self._lock:
            try:
                # Only with space to spare: room pages committed to the WAL but never checkpointed into the database
                # (no block for them there) would pin the WAL, and it would grow past its preallocation.
                st = os.statvfs(self.path.parent)
                spare = st.f_bavail * st.f_frsize >= 4 * (ROOM_PAGES * 4096 + WAL_ROOM_BYTES)
                if spare and int(self._db.execute("PRAGMA freelist_count").fetchone()[0]) < ROOM_PAGES // 2:
                    self._db.execute("BEGIN IMMEDIATE")
                    try:  # pages allocated and freed at once: the file grows, the pages stay on the freelist
                        self._db.execute("INSERT INTO room(pad) VALUES (zeroblob(?))", (ROOM_PAGES * 4096,))
                        self._db.execute("DELETE FROM room")
                        self._db.execute("COMMIT")
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the database file gets those pages now
                if spare and wal.stat().st_size < WAL_ROOM_BYTES and hasattr(os, "posix_fallocate"):
                    # SQLite reads a WAL only up to its last valid frame, and never shrinks it (no
                    # journal_size_limit): the zeros past the end are blocks the next frames land in.
                    fd = os.open(wal, os.O_RDWR | os.O_CLOEXEC)
                    try:
                        os.posix_fallocate(fd, 0, WAL_ROOM_BYTES)
                    finally:
                        os.close(fd)
            except (sqlite3.Error, OSError):
                return False
        try:
            return wal.stat().st_size >= WAL_ROOM_BYTES
        except OSError:
            return False

    def _write(self, fn: Callable[[], Any]) -> Any:
        """Run a write; on a full disk, let ``on_full`` free space once and retry, else say which path is full."""
        with self._lock:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if not _is_full(e):
                    raise
                if self.on_full is not None and self.on_full():
                    try:
                        return fn()
                    except sqlite3.OperationalError as e2:
                        if not _is_full(e2):
                            raise
                raise QueueError(disk_full_message(self.path)) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- reads
    def _row(self, r: sqlite3.Row | None) -> JobRow | None:
        return None if r is None else _to_row(r)

    def get(self, job_id: int) -> JobRow | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone())

    def all(self, states: tuple[str, ...] | None = None) -> list[JobRow]:
        with self._lock:
            if states:
                marks = ",".join("?" * len(states))
                rows = self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", states).fetchall()
            else:
                rows = self._db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        return [_to_row(r) for r in rows]

    def runnable(self) -> list[JobRow]:
        """Queued, not held, in the order they should start: priority first, then submission."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE state = ? ORDER BY held ASC, priority DESC, id ASC", (QUEUED,)).fetchall()
        return [_to_row(r) for r in rows]

    def by_source(self, source: str) -> JobRow | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE source = ?", (source,)).fetchone())

    def by_submission(self, submission_id: str) -> JobRow | None:
        """The job queued from this client-chosen submission id (exactly-once intake), if any."""
        if not submission_id:
            return None
        with self._lock:
            try:
                r = self._db.execute("SELECT * FROM jobs WHERE submission_id = ?", (submission_id,)).fetchone()
            except sqlite3.OperationalError:  # a queue.db older than submission ids (read-only reader)
                return None
            return self._row(r)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {r[0]: r[1] for r in rows}

    def max_priority(self) -> int:
        with self._lock:
            r = self._db.execute("SELECT MAX(priority) FROM jobs WHERE state = ?", (QUEUED,)).fetchone()
        return int(r[0] or 0)

    # ---- writes
    def add(self, *, name: str, gpus_req: Any, total_steps: int, output_dir: str = "", source: str = "",
            priority: int = 0, warnings: list[str] | None = None, submission_id: str = "",
            before_commit: Callable[[int], str | None] | None = None) -> JobRow:
        """Insert a queued job.  ``before_commit(id)`` runs inside the transaction (the daemon builds the
        job's folder there, so a committed row always has its folder); it may return the final output_dir.
        If it raises, nothing is committed."""
        now = time.time()

        def insert() -> JobRow:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO jobs(name, state, reason, priority, gpus_req, total_steps, output_dir, source, warnings,"
                    " submission_id, submitted_ts, updated_ts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (name, QUEUED, REASON_WAITING, int(priority), json.dumps(gpus_req), int(total_steps), output_dir,
                     source, json.dumps(warnings or []), submission_id, now, now))
                job_id = int(cur.lastrowid or 0)
                if before_commit is not None:
                    out = before_commit(job_id)
                    if out is not None:
                        self._db.execute("UPDATE jobs SET output_dir = ? WHERE id = ?", (out, job_id))
                self._db.execute("COMMIT")
            except BaseException:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise
            row = self.get(job_id)
            assert row is not None
            return row

        return self._write(insert)

    def update(self, job_id: int, **values: Any) -> JobRow:
        bad = set(values) - _UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        values["updated_ts"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            self._write(lambda: self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), int(job_id))))
            row = self.get(job_id)
        if row is None:
            raise QueueError(f"job {job_id} does not exist")
        return row

    def remove(self, job_id: int) -> None:
        self._write(lambda: self._db.execute("DELETE FROM jobs WHERE id = ?", (int(job_id),)))


def _to_row(r: sqlite3.Row) -> JobRow:
    have = r.keys()
    return JobRow(**{k: r[k] if k in have else _DEFAULTS[k] for k in _COLUMNS})
