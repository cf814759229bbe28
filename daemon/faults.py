"""Named crash points for the daemon's fault-injection tests.

``WANLORA_FAULT_POINT=intake-commit`` makes the daemon SIGKILL itself the first time it reaches that point,
so a test can kill it exactly where a real crash would hurt most (mid-submit, between the job folder and the
queue commit, ...).  Unset (always, outside tests) this is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = ("submit-spooled", "submit-reply", "intake-folder", "intake-commit", "intake-unlink", "checker-hang",
          "push-start")


def point(name: str) -> None:
    """Die here, as by ``kill -9``, when the environment names this point."""
    wanted = os.environ.get("WANLORA_FAULT_POINT")
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def hang(name: str) -> None:
    """Block here (as a read on a FIFO would) when the environment names this point."""
    wanted = os.environ.get("WANLORA_FAULT_POINT")
    if wanted and name in wanted.split(","):
        import time

        while True:
            time.sleep(3600)


def gate(name: str, timeout_s: float = 120.0) -> None:
    """Wait here while the file ``$WANLORA_FAULT_GATE`` exists, when the environment names this point (a test
    looks at the world at this moment, then removes the file to let the process go on)."""
    wanted = os.environ.get("WANLORA_FAULT_POINT")
    flag = os.environ.get("WANLORA_FAULT_GATE")
    if not (wanted and flag and name in wanted.split(",")):
        return
    import time

    deadline = time.monotonic() + timeout_s
    while os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.05)
