"""The user's callback on job state changes (``callback`` in config.toml), e.g. a phone ping.

Run through ``sh -c`` with the job described in environment variables (never spliced into the command
text, so a job name cannot inject shell code): WANLORA_JOB_ID, WANLORA_JOB_NAME, WANLORA_STATE,
WANLORA_REASON, WANLORA_STEP, WANLORA_OUTPUT_DIR.  Fire and forget: the daemon never waits on it; a
callback that runs past its timeout is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import IO, Any


class Callbacks:
    def __init__(self, command: str, timeout_s: float, log: IO[str] | None = None) -> None:
        self.command = command.strip()
        self.timeout_s = timeout_s
        self.log = log
        self._running: list[tuple[subprocess.Popen[bytes], float]] = []

    def fire(self, job: dict[str, Any]) -> None:
        if not self.command:
            return
        env = dict(os.environ)
        env.update({
            "WANLORA_JOB_ID": str(job.get("id", "")),
            "WANLORA_JOB_NAME": str(job.get("name", "")),
            "WANLORA_STATE": str(job.get("state", "")),
            "WANLORA_REASON": str(job.get("reason", "")),
            "WANLORA_STEP": str(job.get("step", "")),
            "WANLORA_OUTPUT_DIR": str(job.get("output_dir", "")),
        })
        try:
            p = subprocess.Popen(["/bin/sh", "-c", self.command], env=env, stdin=subprocess.DEVNULL,
                                 stdout=self.log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True)
        except OSError as e:
            if self.log:
                print(f"callback could not start: {e}", file=self.log, flush=True)
            return
        self._running.append((p, time.monotonic() + self.timeout_s))

    def reap(self) -> None:
        """Collect finished callbacks; kill the ones past their timeout."""
        keep = []
        for p, deadline in self._running:
            if p.poll() is not None:
                continue
            if time.monotonic() > deadline:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait(timeout=5)
                continue
            keep.append((p, deadline))
        self._running = keep

    @property
    def busy(self) -> bool:
        return bool(self._running)
