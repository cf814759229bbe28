"""Restart safety with the real trainer (``python -m wanlora.engine.train``) on the tiny model: a killed daemon
leaves training running and the next daemon re-adopts it; a killed trainer is requeued and resumes from
its newest state without repeating a step; repeated failures end as failed, not as a loop; cancel
escalates to SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from wanlora.engine.config import jobdir

from tests.daemon.conftest import cli, job_text, wait_for


def _events(job_dir: Path) -> list[dict]:
    return list(jobdir.read_events(job_dir))


def _step_events(job_dir: Path) -> list[int]:
    return [e["step"] for e in _events(job_dir) if e.get("type") == "step"]


def _status_step(job_dir: Path) -> int:
    return int((jobdir.read_status(job_dir) or {}).get("step") or 0)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _lora_pair(out: Path, name: str) -> list[str]:
    return sorted(p.name for p in out.glob(f"{name}_*_noise.safetensors"))


def test_killed_daemon_leaves_the_job_training_and_the_next_daemon_readopts_it(home: Path, daemons, assets) -> None:
    d1 = daemons()
    job_id = d1.request("submit", text=job_text(assets, "survivor", steps=24, every=8), filename="s.toml")["id"]
    job_dir = home / "jobs" / str(job_id)
    wait_for(lambda: _status_step(job_dir) >= 2, timeout=120, interval=0.1, what="the trainer to take steps")
    trainer = d1.job(job_id)["pid"]
    assert d1.job(job_id)["state"] == "running" and _pid_alive(trainer)

    d1.kill(signal.SIGKILL)  # the daemon dies; the trainer is in its own session and keeps going
    s0 = _status_step(job_dir)
    wait_for(lambda: _status_step(job_dir) >= s0 + 2, timeout=30, interval=0.1, what="steps without a daemon")
    assert _pid_alive(trainer)

    d2 = daemons()
    j = d2.job(job_id)
    assert j["state"] == "running" and j["pid"] == trainer and j["restart_count"] == 0, j
    assert j["telemetry"]["host"]["ram_total_gb"] > 0 and j["disk"]["free_gb"] > 0  # status shows the machine
    assert j["reason"] == f"re-adopted by daemon {d2.pid}"
    wait_for(lambda: d2.job(job_id)["step"] > s0 + 2, timeout=30, interval=0.1, what="the new daemon to follow steps")

    # the re-adopted job is steerable: pause (the trainer saves, exits, and we learn it from status.json)
    r = cli("pause", str(job_id), home=home)
    assert r.returncode == 0, r.stderr
    j = wait_for(lambda: (x := d2.job(job_id))["state"] == "paused" and x, timeout=60, what="paused")
    assert j["reason"] == "paused by user" and not _pid_alive(trainer)
    paused_at = j["step"]
    assert paused_at < 24 and (job_dir / "state" / f"step_{paused_at:06d}").is_dir()

    assert cli("resume", str(job_id), home=home).returncode == 0
    j = wait_for(lambda: (x := d2.job(job_id))["state"] == "completed" and x, timeout=180, interval=0.2,
                 what="completion")
    assert j["restart_count"] == 0 and j["step"] == 24 and j["reason"] == "completed"
    # it completed once, with one final LoRA pair
    states = [e["state"] for e in _events(job_dir) if e.get("type") == "state"]
    assert states.count("completed") == 1 and states.count("starting") == 2
    assert _lora_pair(job_dir / "checkpoints", "survivor") == ["survivor_high_noise.safetensors",
                                                                 "survivor_low_noise.safetensors"]
    steps = _step_events(job_dir)
    assert steps == list(range(1, 25))  # the pause lost nothing and repeated nothing
    log = (job_dir / "train.log").read_text()
    assert f"re-adopted the running trainer (pid {trainer})" in log


def test_killed_trainer_is_requeued_and_resumes_without_repeating_a_step(home: Path, daemons, assets) -> None:
    d = daemons()
    n = 24
    job_id = d.request("submit", text=job_text(assets, "phoenix", steps=n, every=4), filename="p.toml")["id"]
    job_dir = home / "jobs" / str(job_id)
    wait_for(lambda: d.job(job_id)["state"] == "running", timeout=30, what="running")
    pid = d.job(job_id)["pid"]

    # Freeze the trainer right after it saved a resumable state, then SIGKILL it (what an OOM killer does).
    # If it already took another step when frozen, let it go on to the next save and try again.
    killed_at = None
    seen = 0
    deadline = time.monotonic() + 150
    while killed_at is None and time.monotonic() < deadline:
        saved = [e["step"] for e in _events(job_dir) if e.get("type") == "state" and e.get("state") == "saved"]
        if len(saved) > seen and saved[-1] < n:
            seen = len(saved)
            os.kill(pid, signal.SIGSTOP)
            last_step = max(_step_events(job_dir) or [0])
            if last_step == saved[-1]:
                os.kill(pid, signal.SIGKILL)
                killed_at = saved[-1]
            else:
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    assert killed_at is not None, "never caught the trainer right after a save"

    j = wait_for(lambda: (x := d.job(job_id))["restart_count"] == 1 and x, timeout=30, what="the requeue")
    assert "killed by SIGKILL" in j["message"] and f"resumes from step {killed_at}" in j["message"]
    j = wait_for(lambda: (x := d.job(job_id))["state"] == "completed" and x, timeout=180, interval=0.2,
                 what="completion after the restart")
    assert j["restart_count"] == 1 and j["step"] == n

    events = _events(job_dir)
    resumed = [e["step"] for e in events if e.get("type") == "state" and e.get("state") == "resumed"]
    assert resumed == [killed_at]
    steps = _step_events(job_dir)
    assert steps == list(range(1, n + 1)), "every step exactly once, in order, across the kill"
    assert _lora_pair(job_dir / "checkpoints", "phoenix") == ["phoenix_high_noise.safetensors",
                                                               "phoenix_low_noise.safetensors"]
    r = cli("status", home=home)
    assert r.returncode == 0 and "COMPLETED" in r.stdout
    r = cli("logs", str(job_id), "-n", "0", home=home)
    assert "requeued after killed (killed by SIGKILL)" in r.stdout
    r = cli("logs", str(job_id), "--events", "-n", "3", home=home)
    assert "completed" in r.stdout
    r = cli("logs", str(job_id), "-f", home=home, timeout=30)  # a finished job: -f prints and returns
    assert r.returncode == 0 and "completed" in r.stdout
    # the socket's follow stream replays the run and ends with the final state
    from wanlora.daemon import client

    stream = list(client.follow(home, job_id))
    assert stream[-1]["end"] is True and stream[-1]["state"] == "completed"
    assert [e["step"] for e in stream[:-1] if e.get("type") == "step"] == steps


def test_a_job_that_keeps_dying_fails_instead_of_looping(home: Path, daemons, assets) -> None:
    d = daemons({"max_restarts": 1})
    job_id = d.request("submit", text=job_text(assets, "doomed", steps=50), filename="d.toml")["id"]
    pids = []
    for _ in range(2):  # killed before it ever saves: no progress between the failures
        pid = wait_for(lambda: (x := d.job(job_id))["state"] == "running" and x["pid"] not in pids and x["pid"],
                       timeout=30, what="a (re)started trainer")
        pids.append(pid)
        os.kill(pid, signal.SIGKILL)
    j = wait_for(lambda: (x := d.job(job_id))["state"] == "failed" and x, timeout=30, what="failed")
    assert j["reason"] == "killed" and "gave up after 2 failures in a row" in j["message"]
    assert j["restart_count"] == 1
    time.sleep(1.0)
    assert d.job(job_id)["state"] == "failed", "a failed job must stay failed"
    # retry gives it a fresh streak
    assert cli("retry", str(job_id), home=home).returncode == 0
    wait_for(lambda: d.job(job_id)["state"] == "running", timeout=30, what="running after retry")
    assert cli("cancel", str(job_id), home=home).returncode == 0
    wait_for(lambda: d.job(job_id)["state"] == "cancelled", timeout=30, what="cancelled")


def test_cancel_escalates_to_sigkill_when_the_trainer_does_not_stop(home: Path, daemons, assets) -> None:
    d = daemons({"cancel_grace_s": 0.5})
    job_id = d.request("submit", text=job_text(assets, "stubborn", steps=50), filename="c.toml")["id"]
    pid = wait_for(lambda: (x := d.job(job_id))["state"] == "running" and x["pid"], timeout=30, what="running")
    os.kill(pid, signal.SIGSTOP)  # a hung trainer: SIGTERM stays pending
    t0 = time.monotonic()
    r = cli("cancel", str(job_id), home=home)
    assert r.returncode == 0 and "SIGTERM sent" in r.stdout
    j = wait_for(lambda: (x := d.job(job_id))["state"] == "cancelled" and x, timeout=30, what="cancelled")
    assert time.monotonic() - t0 < 15 and not _pid_alive(pid)
    assert j["reason"] == "cancelled by user" and "SIGKILL" in j["message"]
    assert "SIGKILL" in d.log.read_text()
    assert json.loads(cli("status", str(job_id), "--json", home=home).stdout)["job"]["state"] == "cancelled"


def test_daemon_restarts_around_a_starting_trainer_and_after_a_reboot(home: Path, daemons, assets) -> None:
    d1 = daemons()
    job_id = d1.request("submit", text=job_text(assets, "early", steps=50), filename="e.toml")["id"]
    pid = wait_for(lambda: (x := d1.job(job_id))["state"] == "running" and x["pid"], timeout=30, what="running")
    # the daemon dies while the trainer is still importing (before it holds run.lock): still re-adopted
    d1.kill(signal.SIGKILL)
    d2 = daemons()
    j = d2.job(job_id)
    assert j["state"] == "running" and j["pid"] == pid and j["restart_count"] == 0, j
    # `wanlora daemon stop` stops the daemon only: the trainer keeps running
    r = cli("daemon", "stop", home=home)
    assert r.returncode == 0 and "1 running job(s) keep training" in r.stdout, r.stdout
    d2.proc.wait(timeout=15)
    assert _pid_alive(pid)
    # a "reboot": daemon and trainer both gone; the next daemon requeues the job to resume, it does not lose it
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not _pid_alive(pid), timeout=10, what="the trainer to die")
    d3 = daemons({"cpu_slots": 0})
    j = d3.job(job_id)
    assert j["state"] == "queued" and j["restart_count"] == 1, j
    assert "not running when the daemon restarted" in j["message"]
