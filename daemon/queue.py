"""The job queue: one SQLite database in WAL mode (readers never block the daemon's writes).

States follow Slurm's split of state + reason: ``queued`` (reason: waiting for GPU / held / priority)
→ ``running`` → ``paused`` → ``completed`` | ``failed`` (reason: oom, nan, data, config, crash, killed…)
| ``cancelled``.  Ids are short monotonic integers (AUTOINCREMENT: never reused, even after remove).
Only the daemon writes; ``wanlora status`` may read the file directly when the daemon is down.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
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
    submitted_ts REAL NOT NULL,
    started_ts REAL,
    ended_ts REAL,
    updated_ts REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_source ON jobs(source) WHERE source != '';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


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
_UPDATABLE = set(_COLUMNS) - {"id", "submitted_ts"}


class Queue:
    """Thread-safe access to ``queue.db`` (one connection, serialised by a lock)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
        else:
            self._db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- reads
    def _row(self, r: sqlite3.Row | None) -> JobRow | None:
        return None if r is None else JobRow(**{k: r[k] for k in _COLUMNS})

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
        return [JobRow(**{k: r[k] for k in _COLUMNS}) for r in rows]

    def runnable(self) -> list[JobRow]:
        """Queued, not held, in the order they should start: priority first, then submission."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE state = ? ORDER BY held ASC, priority DESC, id ASC", (QUEUED,)).fetchall()
        return [JobRow(**{k: r[k] for k in _COLUMNS}) for r in rows]

    def by_source(self, source: str) -> JobRow | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE source = ?", (source,)).fetchone())

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
            priority: int = 0, warnings: list[str] | None = None) -> JobRow:
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO jobs(name, state, reason, priority, gpus_req, total_steps, output_dir, source, warnings,"
                " submitted_ts, updated_ts) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (name, QUEUED, REASON_WAITING, int(priority), json.dumps(gpus_req), int(total_steps), output_dir,
                 source, json.dumps(warnings or []), now, now))
            row = self.get(int(cur.lastrowid or 0))
        assert row is not None
        return row

    def update(self, job_id: int, **values: Any) -> JobRow:
        bad = set(values) - _UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        values["updated_ts"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), int(job_id)))
            row = self.get(job_id)
        if row is None:
            raise QueueError(f"job {job_id} does not exist")
        return row

    def remove(self, job_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (int(job_id),))
