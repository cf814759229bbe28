"""The job folder contract shared by the trainer, the daemon and the TUI.

A job folder is the whole interface between a running trainer and everything that watches or steers it:
files written by the trainer (``events.jsonl``, ``status.json``, checkpoints) and flag files written by
the daemon or the CLI (``control/<flag>``).  Nothing here imports torch, so the daemon and the TUI can use
it; the trainer writes through :mod:`engine.train.events`, which uses these names.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOB_TOML = "job.toml"
EVENTS = "events.jsonl"
STATUS = "status.json"
TRAIN_LOG = "train.log"
RUN_LOCK = "run.lock"
CONTROL_DIR = "control"
CHECKPOINTS = "checkpoints"
SAMPLES = "samples"
STATE_DIR = "state"

PROTOCOL_VERSION = 1
HEARTBEAT_INTERVAL_S = 10.0

# Cooperative flags: the daemon/CLI creates control/<flag>; the trainer polls between steps, acts,
# and deletes the file.  ``pause`` = save a resumable state, then exit with EXIT_PAUSED.
FLAG_PAUSE = "pause"
FLAG_SAVE_NOW = "save_now"
FLAG_SAMPLE_NOW = "sample_now"
FLAGS = (FLAG_PAUSE, FLAG_SAVE_NOW, FLAG_SAMPLE_NOW)

# Trainer exit codes (anything else non-zero, or death by signal, is a crash).
EXIT_OK = 0
EXIT_PAUSED = 75
EXIT_OOM = 76
EXIT_NAN = 77
EXIT_DATA = 78
EXIT_CONFIG = 79
EXIT_LOCKED = 80  # another trainer already holds run.lock for this folder
EXIT_REASONS = {
    EXIT_OK: "completed",
    EXIT_PAUSED: "paused",
    EXIT_OOM: "oom",
    EXIT_NAN: "nan",
    EXIT_DATA: "data",
    EXIT_CONFIG: "config",
    EXIT_LOCKED: "already running",
}


def request_flag(job_dir: Path, flag: str) -> Path:
    """Ask the trainer in ``job_dir`` to do ``flag`` at its next step boundary."""
    if flag not in FLAGS:
        raise ValueError(f"unknown control flag {flag!r}; expected one of {', '.join(FLAGS)}")
    d = Path(job_dir) / CONTROL_DIR
    d.mkdir(parents=True, exist_ok=True)
    p = d / flag
    p.write_text(str(time.time()))
    return p


def pending_flags(job_dir: Path) -> list[str]:
    d = Path(job_dir) / CONTROL_DIR
    return [f for f in FLAGS if (d / f).exists()]


def clear_flag(job_dir: Path, flag: str) -> None:
    try:
        (Path(job_dir) / CONTROL_DIR / flag).unlink()
    except FileNotFoundError:
        pass


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` atomically so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_status(job_dir: Path) -> dict[str, Any] | None:
    """The trainer's last ``status.json``, or None when there is none (yet) or it is unreadable."""
    try:
        with open(Path(job_dir) / STATUS, encoding="utf-8") as f:
            data = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def is_stale(status: dict[str, Any], now: float | None = None) -> bool:
    """A heartbeat older than 3x its interval means the trainer is gone or hung (shown as STALE)."""
    now = time.time() if now is None else now
    hb = float(status.get("heartbeat_ts") or 0)
    interval = float(status.get("heartbeat_interval_s") or HEARTBEAT_INTERVAL_S)
    return now - hb > 3 * interval


@dataclass
class EventCursor:
    """Byte offset into ``events.jsonl`` so a follower resumes where it stopped."""

    offset: int = 0


def read_events(job_dir: Path, cursor: EventCursor | None = None) -> Iterator[dict[str, Any]]:
    """Yield the complete event lines after ``cursor`` (a trailing partial line is left for later)."""
    cursor = cursor or EventCursor()
    path = Path(job_dir) / EVENTS
    try:
        with open(path, "rb") as f:
            f.seek(cursor.offset)
            data = f.read()
    except FileNotFoundError:
        return
    end = data.rfind(b"\n")
    if end < 0:
        return
    chunk = data[: end + 1]
    cursor.offset += len(chunk)
    for line in chunk.splitlines():
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict):
            yield ev


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling, fsync, rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
