"""The progress protocol the trainer writes: ``events.jsonl`` (append-only) and ``status.json`` (atomic).

Anything (daemon, TUI, ``tail -f``) can follow a run from these two files alone.  Every event line is
``{"v", "seq", "ts", "type", ...}`` with ``type`` one of :data:`EVENT_TYPES`; ``seq`` keeps increasing
across restarts (it continues from the last complete line of an existing file).  ``status.json`` is
rewritten atomically on every change and by a heartbeat thread, so a reader can tell a live trainer from
a dead one (``jobdir.is_stale``).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from wanlora.engine.config import jobdir

EVENT_TYPES = ("step", "heartbeat", "checkpoint", "sample", "warning", "error", "state", "cache", "eval")


def _clean(x: Any) -> Any:
    """JSON-safe values: non-finite floats become null (``json`` would write NaN, which is not JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def last_seq(path: Path) -> int:
    """The ``seq`` of the last complete line of an events file (0 when none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read()
    except FileNotFoundError:
        return 0
    for line in reversed(tail.splitlines()):
        try:
            ev = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(ev, dict) and isinstance(ev.get("seq"), int):
            return ev["seq"]
    return 0


class EventLog:
    """Appends one JSON object per line; thread-safe (the heartbeat thread writes too)."""

    def __init__(self, job_dir: Path) -> None:
        self.path = Path(job_dir) / jobdir.EVENTS
        self._lock = threading.Lock()
        self._seq = last_seq(self.path)
        self._ensure_line_start()
        self._f = open(self.path, "a", encoding="utf-8")

    def _ensure_line_start(self) -> None:
        """A killed writer may have left half a line: start ours on a fresh line."""
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    return
                f.seek(-1, os.SEEK_END)
                last = f.read(1)
        except FileNotFoundError:
            return
        if last != b"\n":
            with open(self.path, "ab") as f:
                f.write(b"\n")

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        with self._lock:
            self._seq += 1
            ev = {"v": jobdir.PROTOCOL_VERSION, "seq": self._seq, "ts": round(time.time(), 3), "type": type}
            ev.update(_clean(fields))
            self._f.write(json.dumps(ev, separators=(",", ":")) + "\n")
            self._f.flush()
        return ev

    def close(self) -> None:
        with self._lock:
            try:
                os.fsync(self._f.fileno())
            except OSError:
                pass
            self._f.close()


class Status:
    """``status.json``: the trainer's current state, rewritten atomically on every update."""

    def __init__(self, job_dir: Path, heartbeat_interval_s: float = jobdir.HEARTBEAT_INTERVAL_S) -> None:
        self.path = Path(job_dir) / jobdir.STATUS
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {
            "v": jobdir.PROTOCOL_VERSION, "state": "starting", "step": 0, "total_steps": 0, "loss": None,
            "expert": None, "eta_s": None, "heartbeat_ts": time.time(),
            "heartbeat_interval_s": heartbeat_interval_s, "last_checkpoint": None, "pid": os.getpid(),
        }

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.data.update(_clean(fields))
            self.data["heartbeat_ts"] = round(time.time(), 3)
            jobdir.write_json_atomic(self.path, self.data)


class Heartbeat:
    """A daemon thread that touches ``status.json`` (and logs a heartbeat event) every interval."""

    def __init__(self, status: Status, events: EventLog | None, interval_s: float) -> None:
        self.status, self.events, self.interval_s = status, events, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wanlora-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.status.update()
                if self.events is not None:
                    self.events.emit("heartbeat", step=self.status.data.get("step"))
            except (OSError, ValueError):  # a full disk must not kill the trainer from this thread
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
