"""Starting a trainer and turning the way it ended into a state + reason.

Each job runs ``python -m wanlora.engine.train JOB_DIR`` in its own session (``start_new_session``), so the
trainer outlives a daemon that dies or is upgraded, and ``cancel`` can signal the whole process group
(data workers included).  stdout/stderr go to ``JOB_DIR/train.log``; the daemon never reads the pipes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wanlora.engine.config import jobdir

TRAINER_MODULE = "wanlora.engine.train"
# NVLink multicast stays off on rented machines (KINDS.md): NCCL, torch symmetric memory and NVSHMEM.
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
RETRYABLE = ("crash", "killed", "stopped")


def trainer_command(job_dir: Path, slots: list[str] | None = None) -> list[str]:
    """One process for one GPU; torchrun over the reserved GPUs (or job.nodes) via engine.config.launch."""
    from wanlora.engine.config import caption_job
    from wanlora.engine.config.findings import JobError
    from wanlora.engine.config.io import load_job
    from wanlora.engine.config.launch import LaunchError
    from wanlora.engine.config.launch import trainer_command as launch_command

    if caption_job.is_caption_job_dir(job_dir):  # a queued `wanlora caption`: its own child, same contract
        return caption_job.command(job_dir, sys.executable)
    gpus = [int(s) for s in (slots or []) if s.isdigit()]
    try:
        job = load_job(Path(job_dir) / jobdir.JOB_TOML)
    except (JobError, OSError):  # the trainer reports a broken job.toml itself, with the exit code for it
        return [sys.executable, "-m", TRAINER_MODULE, str(job_dir)]
    try:
        return launch_command(job, job_dir, sys.executable, gpus=gpus)
    except LaunchError as e:
        raise OSError(str(e)) from e


def trainer_env(job_id: int, slots: list[str], restart_count: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MULTICAST_OFF)
    gpus = [s for s in slots if not s.startswith("cpu")]
    if gpus:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's indices = NVML's, which the daemon schedules by
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    env["WANLORA_JOB_ID"] = str(job_id)
    env["WANLORA_SLOTS"] = ",".join(slots)
    env["WANLORA_RESTART_COUNT"] = str(restart_count)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "300")  # torchrun: time for ranks to save after SIGTERM
    return env


def append_log(job_dir: Path, line: str) -> None:
    """A daemon note in ``train.log`` (O_APPEND writes do not tear the trainer's lines)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        with open(Path(job_dir) / jobdir.TRAIN_LOG, "a", encoding="utf-8") as f:
            f.write(f"[wanlora daemon {stamp}] {line}\n")
    except OSError:
        pass


def spawn(job_dir: Path, job_id: int, slots: list[str], restart_count: int = 0) -> subprocess.Popen[bytes]:
    """Start the trainer for ``job_dir`` in a new session; its output is appended to train.log."""
    job_dir = Path(job_dir)
    for flag in jobdir.FLAGS:  # a stale pause flag would stop the resumed run at once
        jobdir.clear_flag(job_dir, flag)
    where = ", ".join(slots) or "cpu"
    append_log(job_dir, f"starting trainer on {where} (restart {restart_count})")
    log = open(job_dir / jobdir.TRAIN_LOG, "ab")
    try:
        return subprocess.Popen(trainer_command(job_dir, slots), cwd=job_dir, env=trainer_env(job_id, slots, restart_count),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    finally:
        log.close()


def signal_group(pid: int, sig: int) -> bool:
    """Signal the trainer's process group (its session leader is the trainer); False if it is gone."""
    if pid <= 1:
        return False
    try:
        pgid = os.getpgid(pid)  # the trainer's (or torchrun's) own group: every rank gets the signal
        if pgid > 1 and pgid != os.getpgrp():
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the new state, a short reason, the detail for the user, and whether to retry."""

    state: str
    reason: str
    message: str = ""
    retry: bool = False


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the trainer is gone (exit status unknown: it was not this daemon's child)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        return f"stopped by {signal.Signals(code - 128).name} (exit {code})"
    return f"exit code {code}"


def classify(code: int | None, status: dict[str, Any] | None, *, cancel: bool = False,
             pause: bool = False) -> Outcome:
    """Map a finished trainer (exit code if we were its parent, else its last ``status.json``) to an outcome."""
    st = status or {}
    st_state = st.get("state")
    message = str(st.get("message") or "")
    step = st.get("step")
    if code == jobdir.EXIT_OK or (code is None and st_state == "completed"):
        return Outcome("completed", "completed", f"finished at step {step}" if step is not None else "")
    if cancel:
        return Outcome("cancelled", "cancelled by user", f"stopped at step {step} ({describe_exit(code)})")
    if code == jobdir.EXIT_PAUSED or (code is None and st_state == "paused"):
        return Outcome("paused", "paused by user", f"resumable state saved at step {step}; `wanlora resume` continues")
    reason = jobdir.EXIT_REASONS.get(code) if code is not None else None
    if reason is None and code is None and st_state == "failed":
        reason = str(st.get("reason") or "crash")
    if reason == "oom":  # the guide's advice goes into the reason itself: it is what the user must act on
        advice = message or ("CUDA ran out of memory; follow the guide's OOM ladder: drop 1024 → frames 41→33→21 → "
                             "batch 1 → low_vram → nf4 → layer_offloading")
        return Outcome("failed", f"oom: {advice}", advice)
    if reason == "nan":
        advice = message or "the loss became NaN/inf; lower the learning rate and resume from the last good checkpoint"
        return Outcome("failed", f"nan: {advice}", advice)
    if reason in ("data", "config"):
        return Outcome("failed", reason, message or describe_exit(code))
    if code == jobdir.EXIT_LOCKED:
        return Outcome("running", "already running", "another trainer holds run.lock for this job")
    # a crash, a signal, a reboot: retry from the newest saved state
    if code is None and st_state == "stopped":
        return Outcome("failed", "stopped", "stopped by a signal (e.g. a shutdown) after saving its state", retry=True)
    if code is not None and code < 0 and -code == signal.SIGKILL:
        why = "killed"
    elif code is not None and (code - 128 in (signal.SIGTERM, signal.SIGINT) or -code in (signal.SIGTERM, signal.SIGINT)):
        why = "stopped"
    else:
        why = "crash"
    detail = describe_exit(code)
    if st_state == "failed" and message:
        detail += f": {message}"
    return Outcome("failed", why, detail, retry=True)
