"""Fixtures for the multi-process tests: the engine tests' tiny model and clips, and a launcher helper."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.engine.conftest import clips, tiny_model  # noqa: F401  (session fixtures, shared)

ROOT = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment for trainer processes: repo importable, no inherited torchrun variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def start(cmd: Sequence[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(list(cmd), cwd=ROOT, env=child_env(**env), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def finish(p: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> int:
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.wait()
        pytest.fail(f"trainer did not finish in {timeout}s; log:\n{log.read_text()[-3000:]}")


def wait_for_step(job_dir: Path, step: int, p: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Block until events.jsonl shows ``step`` (or the process ended)."""
    from wanlora.engine.config import jobdir

    end = time.monotonic() + timeout
    while time.monotonic() < end and p.poll() is None:
        if any(e.get("type") == "step" and e["step"] >= step for e in jobdir.read_events(job_dir)):
            return
        time.sleep(0.02)


def python() -> str:
    return sys.executable
