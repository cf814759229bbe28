"""Telling a live trainer from a dead one without being its parent (restart safety).

A trainer holds ``flock`` on ``JOB_DIR/run.lock`` for its whole life and the kernel drops it when the
process dies (crash, OOM kill, SIGKILL, reboot), so "the lock is held" is the truth about a job that
a previous daemon started.  We probe with a shared non-blocking lock, released at once, on a file we
never create; a running trainer's exclusive lock makes the probe fail.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import psutil
from wanlora.engine.config import jobdir


def lock_held(job_dir: Path) -> bool:
    try:
        fd = os.open(Path(job_dir) / jobdir.RUN_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def lock_pid(job_dir: Path) -> int | None:
    """The pid the trainer wrote into ``run.lock`` (else the one in status.json)."""
    try:
        text = (Path(job_dir) / jobdir.RUN_LOCK).read_text().strip()
        if text.isdigit():
            return int(text)
    except OSError:
        pass
    st = jobdir.read_status(job_dir) or {}
    pid = st.get("pid")
    return int(pid) if isinstance(pid, int) else None


def pid_alive(pid: int | None) -> bool:
    """A running (not zombie) process with this pid exists."""
    if not pid or pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def is_trainer_of(pid: int, job_dir: Path) -> bool:
    """``pid`` runs ``engine.train`` for ``job_dir`` (guards against a reused pid)."""
    try:
        cmd = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "wanlora.engine.train" in cmd and str(job_dir) in cmd


def live_trainer(job_dir: Path, known_pid: int | None = None) -> int | None:
    """The pid of the trainer running ``job_dir`` now, or None when there is none.

    The lock decides; before the trainer has taken it (its first seconds are spent importing), a live
    process whose command line names this job folder counts as alive too.
    """
    if lock_held(job_dir):
        return lock_pid(job_dir) or known_pid or -1
    if known_pid and pid_alive(known_pid) and is_trainer_of(known_pid, job_dir):
        return known_pid
    return None
