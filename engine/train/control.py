"""How the outside world steers a running trainer: the run lock, control flags and SIGTERM.

- ``run.lock``: an exclusive ``flock`` held for the trainer's whole life.  The kernel drops it when the
  process dies, so the daemon can tell a live trainer (lock held) from a dead one without pid files.
- control flags (``control/pause`` …, see :mod:`engine.config.jobdir`): polled between steps, cleared
  when taken.
- SIGTERM/SIGINT: set a flag; the loop stops at the next step boundary after saving a resumable state.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path
from types import FrameType

from wanlora.engine.config import jobdir


class RunLock:
    """``flock(LOCK_EX | LOCK_NB)`` on ``JOB_DIR/run.lock``; :meth:`acquire` is False if another holds it."""

    def __init__(self, job_dir: Path) -> None:
        self.path = Path(job_dir) / jobdir.RUN_LOCK
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def take_flags(job_dir: Path) -> list[str]:
    """The control flags set right now, each cleared as it is taken."""
    flags = jobdir.pending_flags(job_dir)
    for f in flags:
        jobdir.clear_flag(job_dir, f)
    return flags


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks at step boundaries (a second signal still kills)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. the trainer run inside a test thread)
                pass
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested is not None:  # second signal: give up being graceful
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.requested = signal.Signals(signum).name

    def uninstall(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)  # type: ignore[arg-type]
        self._previous.clear()
