"""Kill the trainer process (SIGKILL, SIGTERM) mid-run, restart it: the run continues bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wanlora.engine.config import jobdir

from tests.engine.conftest import make_job_dir

ROOT = Path(__file__).resolve().parents[3]


def _job(tmp: Path, clips: Path, model: Path) -> Path:
    return make_job_dir(tmp, clips, model, steps=16, multistage__switch_every=3, save__every=4,
                        save__max_keep=10)


def _start(job_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "wanlora.engine.train", "--cpu", str(job_dir)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _events(job_dir: Path) -> list[dict]:
    return list(jobdir.read_events(job_dir))


def _losses(events: list[dict]) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in events if e["type"] == "step"]


def _wait_for(job_dir: Path, pred, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if any(pred(e) for e in _events(job_dir)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    raise AssertionError("timed out waiting for the trainer")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, clips: Path, tiny_model: Path) -> list[tuple[int, float]]:
    """The loss of every step of an uninterrupted run."""
    jd = _job(tmp_path_factory.mktemp("ref"), clips, tiny_model)
    proc = _start(jd)
    assert proc.wait(timeout=300) == jobdir.EXIT_OK, proc.stderr.read().decode()[-3000:]
    ref = _losses(_events(jd))
    assert [s for s, _ in ref] == list(range(1, 17))
    return ref


def _check_continuation(jd: Path, reference: list[tuple[int, float]]) -> None:
    events = _events(jd)
    resumed = [e for e in events if e["type"] == "state" and e["state"] == "resumed"]
    assert len(resumed) == 1
    resume_step = resumed[0]["step"]
    idx = events.index(resumed[0])
    before = _losses(events[:idx])
    after = _losses(events[idx:])
    # the restarted trainer starts right after the newest complete state: no saved step runs again
    assert after[0][0] == resume_step + 1
    assert [s for s, _ in after] == list(range(resume_step + 1, 17))
    # steps that ran after that state and before the kill were lost; recomputed, they give the same loss
    redone = dict(after)
    for step, loss in before:
        if step > resume_step:
            assert redone[step] == loss
    merged = dict(before)
    merged.update(after)
    assert sorted(merged.items()) == reference  # bit-exact: same floats, step for step
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert jobdir.read_status(jd)["state"] == "completed"


def test_sigkill_after_a_checkpoint_then_restart_is_bit_exact(tmp_path: Path, clips: Path, tiny_model: Path,
                                                               reference: list[tuple[int, float]]) -> None:
    jd = _job(tmp_path, clips, tiny_model)
    proc = _start(jd)
    _wait_for(jd, lambda e: e["type"] == "state" and e.get("state") == "saved" and e["step"] == 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert (jd / "state" / "step_000008" / "meta.json").is_file()
    proc = _start(jd)
    assert proc.wait(timeout=300) == jobdir.EXIT_OK, proc.stderr.read().decode()[-3000:]
    _check_continuation(jd, reference)
    names = sorted(p.name for p in (jd / "checkpoints").iterdir())
    assert names == [f"wanlora_demo_{e}{s}.safetensors" for e in ("high_noise", "low_noise")
                     for s in ("", "_000004", "_000008", "_000012")]


def test_sigterm_saves_state_at_the_step_boundary_and_resumes(tmp_path: Path, clips: Path, tiny_model: Path,
                                                              reference: list[tuple[int, float]]) -> None:
    jd = _job(tmp_path, clips, tiny_model)
    proc = _start(jd)
    _wait_for(jd, lambda e: e["type"] == "step" and e["step"] >= 5, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    status = jobdir.read_status(jd)
    assert status["state"] == "stopped"
    last_step = max(s for s, _ in _losses(_events(jd)))
    assert (jd / "state" / f"step_{last_step:06d}" / "meta.json").is_file()  # nothing lost
    proc = _start(jd)
    assert proc.wait(timeout=300) == jobdir.EXIT_OK, proc.stderr.read().decode()[-3000:]
    _check_continuation(jd, reference)
