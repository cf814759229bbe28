"""What the dashboard shows, read straight from job folders (works while the daemon is down).

``status.json`` gives the current state in O(1); ``events.jsonl`` is followed incrementally with an
:class:`EventCursor`, so reattaching to a 3000-step run reads the file once and every later poll reads only
the new lines.  Pure data, no Textual, no torch: the screens and the attach benchmark share it.
"""

from __future__ import annotations

import time
import tomllib
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wanlora.engine.config import jobdir

TERMINAL = ("completed", "failed", "cancelled", "stopped")
LOG_LINES = 200


@dataclass
class JobSummary:
    """One row of the job list."""

    id: str
    dir: Path | None
    name: str
    state: str
    reason: str = ""
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    loss: float | None = None
    stale: bool = False

    @property
    def shown_state(self) -> str:
        return "STALE" if self.stale else self.state


def job_name(job_dir: Path) -> str:
    try:
        with open(job_dir / jobdir.JOB_TOML, "rb") as f:
            return str(tomllib.load(f).get("job", {}).get("name", job_dir.name))
    except (OSError, tomllib.TOMLDecodeError):
        return job_dir.name


def live_state(status: dict[str, Any] | None, daemon_row: dict[str, Any] | None, now: float) -> tuple[str, str, bool]:
    """(state, reason, stale): the daemon's word when it is up, else the trainer's status file.

    A job whose status says it is working but whose heartbeat is older than 3× its interval is STALE
    (trainer dead or hung, or the daemon has not noticed yet).
    """
    st = (daemon_row or {}).get("state") or (status or {}).get("state") or "queued"
    reason = (daemon_row or {}).get("reason") or (status or {}).get("reason") or ""
    working = str((status or {}).get("state", "")) not in TERMINAL + ("paused",)
    stale = bool(status) and working and st not in TERMINAL + ("paused", "queued") and jobdir.is_stale(status or {}, now)
    return str(st), str(reason or ""), stale


def list_jobs(home: Path, daemon_rows: list[dict[str, Any]] | None = None, now: float | None = None) -> list[JobSummary]:
    """Every job in ``<home>/jobs`` merged with the daemon's list (queued jobs may have no status yet)."""
    now = time.time() if now is None else now
    by_id = {str(r.get("id")): r for r in (daemon_rows or [])}
    out: dict[str, JobSummary] = {}
    jobs_dir = Path(home) / "jobs"
    dirs = sorted((p for p in jobs_dir.iterdir() if p.is_dir()), key=_id_key) if jobs_dir.is_dir() else []
    for d in dirs:
        status = jobdir.read_status(d)
        row = by_id.get(d.name)
        state, reason, stale = live_state(status, row, now)
        s = status or {}
        out[d.name] = JobSummary(
            id=d.name, dir=d, name=str((row or {}).get("name") or job_name(d)), state=state, reason=reason,
            step=int(s.get("step") or (row or {}).get("step") or 0),
            total=int(s.get("total_steps") or (row or {}).get("total_steps") or 0),
            eta_s=s.get("eta_s"), loss=s.get("loss"), stale=stale,
        )
    for jid, row in by_id.items():
        if jid not in out:
            out[jid] = JobSummary(id=jid, dir=None, name=str(row.get("name", jid)), state=str(row.get("state", "?")),
                                  reason=str(row.get("reason") or ""), step=int(row.get("step") or 0),
                                  total=int(row.get("total_steps") or 0))
    return sorted(out.values(), key=lambda j: _id_key(Path(j.id)))


def _id_key(p: Path) -> tuple[int, str]:
    n = p.name
    digits = "".join(ch for ch in n if ch.isdigit())
    return (int(digits) if digits else 1 << 60, n)


def fmt_eta(s: float | None) -> str:
    if s is None:
        return "-"
    s = max(0, int(s))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


@dataclass
class JobFeed:
    """Everything one job view needs, updated by :meth:`poll` (only new bytes are read)."""

    dir: Path
    cursor: jobdir.EventCursor = field(default_factory=jobdir.EventCursor)
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    last_step: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)  # one point per save: mean eval loss over experts
    eval_losses: list[float] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    notes: deque[str] = field(default_factory=lambda: deque(maxlen=50))  # warnings/errors/state changes
    status: dict[str, Any] | None = None
    log_offset: int = 0
    log_lines: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    log_total: int = 0  # lines ever read (the log widget appends only the difference)
    _log_partial: str = ""

    def poll(self) -> bool:
        """Read what is new; True when anything changed (the view redraws only then)."""
        changed = False
        for ev in jobdir.read_events(self.dir, self.cursor):
            self._apply(ev)
            changed = True
        status = jobdir.read_status(self.dir)
        if status != self.status:
            self.status = status
            changed = True
        return self._read_log() or changed

    def _apply(self, ev: dict[str, Any]) -> None:
        t = ev.get("type")
        if t == "step":
            step, loss = ev.get("step"), ev.get("loss")
            if isinstance(step, int):
                if self.steps and step <= self.steps[-1]:  # resumed from an earlier state: history rewinds
                    cut = bisect_left(self.steps, step)
                    del self.steps[cut:], self.losses[cut:]
                if isinstance(loss, int | float):
                    self.steps.append(step)
                    self.losses.append(float(loss))
            self.last_step = ev
        elif t == "checkpoint":
            self.checkpoints.append(ev)
        elif t == "eval":
            self._apply_eval(ev)
        elif t == "sample":
            self.samples.append(ev)
        elif t in ("warning", "error"):
            self.notes.append(f"{t}: {ev.get('message') or ev.get('reason') or ''}")
        elif t == "state":
            st = ev.get("state")
            extra = f" ({ev['reason']})" if ev.get("reason") else ""
            self.notes.append(f"state: {st}{extra}")

    def _apply_eval(self, ev: dict[str, Any]) -> None:
        """One eval point per save (the mean over experts); a resumed run's re-saved step replaces it."""
        losses = [r.get("loss") for r in (ev.get("experts") or {}).values() if isinstance(r, dict)]
        losses = [float(v) for v in losses if isinstance(v, int | float)]
        step = ev.get("step")
        if not losses or not isinstance(step, int):
            return
        cut = bisect_left(self.eval_steps, step)
        del self.eval_steps[cut:], self.eval_losses[cut:]
        self.eval_steps.append(step)
        self.eval_losses.append(sum(losses) / len(losses))

    def _read_log(self) -> bool:
        """Tail ``train.log`` from the last offset (64 KiB at most per poll; a big backlog is skipped)."""
        path = self.dir / jobdir.TRAIN_LOG
        try:
            size = path.stat().st_size
        except OSError:
            return False
        if size < self.log_offset:  # rotated/truncated
            self.log_offset, self._log_partial = 0, ""
        if size == self.log_offset:
            return False
        start = max(self.log_offset, size - 65536)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(size - start)
        self.log_offset = size
        text = self._log_partial + data.decode("utf-8", errors="replace").replace("\r", "\n")
        lines = text.split("\n")
        self._log_partial = lines.pop()
        from wanlora.tui.progress import is_noise

        new = [line for line in lines if line.strip() and not is_noise(line)]  # no tqdm load bars
        self.log_lines.extend(new)
        self.log_total += len(new)
        return True

    def files(self, sub: str) -> list[Path]:
        """Checkpoint / preview files on disk (newest last)."""
        d = self.dir / sub
        try:
            return sorted((p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")),
                          key=lambda p: p.stat().st_mtime)
        except OSError:
            return []


def output_dir(job_dir: Path, daemon_row: dict[str, Any] | None = None) -> Path:
    """Where the job's LoRA files land: the daemon's word, else ``[job] output_dir``, else ``checkpoints/``."""
    if daemon_row and daemon_row.get("output_dir"):
        return Path(str(daemon_row["output_dir"]))
    try:
        with open(job_dir / jobdir.JOB_TOML, "rb") as f:
            out = tomllib.load(f).get("job", {}).get("output_dir")
    except (OSError, tomllib.TOMLDecodeError):
        out = None
    return Path(out).expanduser() if isinstance(out, str) and out else job_dir / jobdir.CHECKPOINTS


def lora_files(folder: Path) -> list[Path]:
    """The LoRA files in a folder, oldest first (final pair last: it is written last)."""
    try:
        files = [p for p in folder.iterdir() if p.suffix == ".safetensors" and not p.name.startswith(".")]
    except OSError:
        return []
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def newest_pair(files: list[Path]) -> list[Path]:
    """The pair a user wants: the final files (no step suffix) if present, else the newest step pair."""
    import re

    final = [p for p in files if not re.search(r"_\d{6}\.safetensors$", p.name)]
    if final:
        return sorted(final, key=lambda p: p.name)
    if not files:
        return []
    step = re.search(r"_(\d{6})\.safetensors$", files[-1].name)
    return sorted([p for p in files if step and p.name.endswith(f"_{step.group(1)}.safetensors")], key=lambda p: p.name)


def last_error_lines(job_dir: Path, n: int = 6) -> list[str]:
    """The end of ``train.log`` without library noise: where a failure's own words are."""
    from wanlora.tui.progress import is_noise

    try:
        with open(job_dir / jobdir.TRAIN_LOG, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 65536))
            text = f.read().decode("utf-8", errors="replace").replace("\r", "\n")
    except OSError:
        return []
    lines = [ln.rstrip() for ln in text.split("\n") if ln.strip() and not is_noise(ln)]
    return lines[-n:]
