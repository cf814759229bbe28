"""A full disk (issue #13, point 8): the whole home on a small tmpfs fills up while a real trainer runs.  The
job must not sit in RUNNING with no trainer: it fails on its own with a reason naming the path and the free
space, the daemon keeps answering, and the trainer's leftover temp files are swept after it exits."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from wanlora.daemon import adopt
from wanlora.daemon.queue import FAILED, RUNNING, Queue
from wanlora.engine.config import jobdir

from tests.daemon.conftest import cli, job_text, wait_for


def _fill(folder: Path) -> Path:
    """Write one file until the file system is full (what a runaway cache or download does)."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 4096):  # megabytes, then the last partial blocks
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    finally:
        os.close(fd)
    return filler


def _tail(p: Path, n: int = 3000) -> str:
    try:
        return p.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@pytest.fixture
def small_home(home: Path):  # noqa: ANN201
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(home)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield home
    subprocess.run(["umount", "-l", str(home)], capture_output=True)


def test_queue_db_records_job_states_on_a_disk_kept_full_without_needing_the_reserve(small_home: Path) -> None:
    """queue.db keeps its own room (a preallocated WAL, free pages): freed space elsewhere is taken at once by
    whatever filled the disk, so the daemon's updates must need no new blocks at all."""
    asked: list[int] = []
    q = Queue(small_home / "queue.db", on_full=lambda: asked.append(1) or False)
    ids = [q.add(name=f"j{i}", gpus_req="auto", total_steps=400).id for i in range(5)]
    _fill(small_home)
    last_step: dict[int, int] = {}
    for k in range(600):  # progress on every tick, a state change with a long message now and then
        job = ids[k % len(ids)]
        if k % 7 == 0:
            row = q.update(job, state=(FAILED, RUNNING)[k % 2], reason="disk full", message="m" * (k % 900))
            assert row.message == "m" * (k % 900)
        else:
            assert q.update(job, step=k, saved_step=k - 1).step == k
            last_step[job] = k
    assert asked == [], "a write needed new disk blocks (the reserve was asked for)"
    q.close()
    reader = Queue(small_home / "queue.db", readonly=True)
    assert {r.id: r.step for r in reader.all()} == last_step
    reader.close()


@pytest.mark.parametrize("trainer_fate", ["hangs", "crashes"])
def test_a_full_home_fails_the_job_with_the_path_and_free_space_and_the_daemon_keeps_serving(
        small_home: Path, daemons, assets, trainer_fate: str) -> None:
    """``crashes``: the trainer dies of ENOSPC.  ``hangs``: it is frozen (SIGSTOP) as the disk fills, as a
    trainer stuck on a full disk is: its heartbeat goes stale and the daemon stops it."""
    home = small_home
    d = daemons({"cpu_slots": 1, "cancel_grace_s": 5.0})
    job_id = d.request("submit", text=job_text(assets, "fills", steps=400, every=1), filename="f.toml")["id"]
    job_dir = home / "jobs" / str(job_id)
    wait_for(lambda: (jobdir.read_status(job_dir) or {}).get("step", 0) >= 2, timeout=180, interval=0.2,
             what=f"the trainer to take steps\n{(job_dir / 'train.log').read_text()[-3000:] if (job_dir / 'train.log').exists() else ''}")
    trainer = d.job(job_id)["pid"]
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = job_dir / f".status.json.{dead.pid}.tmp"  # as a SIGKILLed writer leaves it
    stale.write_text("{}")
    if trainer_fate == "hangs":
        os.kill(trainer, signal.SIGSTOP)
    _fill(home)
    stop = threading.Event()

    def keep_full() -> None:  # a runaway writer: space the daemon frees (its reserve) is taken again at once
        while not stop.wait(0.2):
            _fill(home)

    filler = threading.Thread(target=keep_full, daemon=True)
    filler.start()
    try:
        j = wait_for(lambda: (x := d.job(job_id))["state"] != "running" and x, timeout=180, interval=0.3,
                     what="the job to leave RUNNING on its own")
    except AssertionError as e:  # what the daemon and the trainer say now, not when the wait began
        raise AssertionError(f"{e}\ntrainer alive: {adopt.pid_alive(trainer)}\n{_tail(d.log)}\n"
                             f"{_tail(job_dir / 'train.log')}") from None
    finally:
        stop.set()
        filler.join()
    assert j["state"] == "failed" and j["reason"] == "disk full", j
    assert f"no space left on {job_dir}" in j["message"] and "MB free of" in j["message"], j["message"]
    assert f"wanlora retry {job_id}" in j["message"]
    if trainer_fate == "hangs":
        assert "could not write any more and was stopped by the daemon" in j["message"], j["message"]
        assert "disk is full; stopping it" in d.log.read_text()
    else:  # it ended by itself, at once: not by the daemon's stall check (that would mean a trainer stuck on ENOSPC)
        assert "the trainer stopped (exit code" in j["message"], j["message"]
    assert not adopt.pid_alive(trainer)
    assert d.request("ping")["ok"] and d.request("list")["jobs"][0]["state"] == "failed"  # still serving
    assert not stale.exists(), "temp files are swept after the trainer exits"
    leftovers = [p.name for p in [*job_dir.rglob(".*.tmp*"), *job_dir.glob("state/.tmp_step_*")]]
    assert not leftovers, leftovers


def test_a_progress_write_refused_by_the_disk_does_not_stop_the_watch(tmp_path: Path, monkeypatch) -> None:
    """One failing write must not end the pass over a trainer: the stall check still runs (the frozen trainer is
    stopped), and the progress the disk refused is recorded with the job's end."""
    import io
    import json
    import sys
    import time

    from wanlora.daemon import diskspace
    from wanlora.daemon.callback import Callbacks
    from wanlora.daemon.config import DaemonConfig
    from wanlora.daemon.home import Home
    from wanlora.daemon.queue import QueueError
    from wanlora.daemon.supervisor import Daemon, Watch

    home = Home.resolve(tmp_path / "home")
    home.ensure()
    d = Daemon(home, DaemonConfig(cancel_grace_s=5.0), log=io.StringIO())
    d.queue = Queue(home.db)
    d.reserve = diskspace.Reserve(home.root / ".disk-reserve")
    d.callbacks = Callbacks("", 1.0, d.out)
    row = d.q.add(name="frozen", gpus_req="auto", total_steps=400)
    job_dir = home.job_dir(row.id)
    job_dir.mkdir(parents=True)
    # a trainer that stopped answering: alive (in its own session, as runner.spawn starts it), heartbeat 100 s old
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        d.q.update(row.id, state=RUNNING, pid=trainer.pid)
        jobdir.write_json_atomic(job_dir / jobdir.STATUS, {"state": "running", "step": 7, "heartbeat_ts": time.time() - 100,
                                                          "heartbeat_interval_s": 10.0})
        (job_dir / jobdir.EVENTS).write_text(json.dumps({"type": "step", "step": 7, "total_steps": 400}) + "\n"
                                             + json.dumps({"type": "state", "state": "saved", "step": 6}) + "\n")
        monkeypatch.setattr(diskspace, "free_bytes", lambda p: 0)  # every folder of this home is full
        real_update = d.q.update

        def update(job_id: int, **values: object):  # noqa: ANN202  (progress refused, as on a full disk)
            if "step" in values and "state" not in values:
                raise QueueError(f"cannot write {home.db}: the disk is full (0.0 MB free)")
            return real_update(job_id, **values)

        monkeypatch.setattr(d.q, "update", update)
        w = Watch(trainer.pid, trainer)
        d.watch[row.id] = w
        d._check(row.id, w)
        assert w.disk_stall and w.kill_at is not None, d.out.getvalue()  # the stall check ran: SIGTERM sent
        assert trainer.wait(timeout=10) == -signal.SIGTERM
        d._check(row.id, w)
        j = d.q.get(row.id)
        assert j is not None and (j.state, j.reason) == ("failed", "disk full"), j
        assert (j.step, j.saved_step) == (7, 6), "the refused progress went into the job's end"
        assert "could not write any more and was stopped by the daemon" in j.message
        assert row.id not in d.watch
    finally:
        trainer.kill()
        trainer.wait()
        d.q.close()


def test_submit_with_the_daemon_down_on_a_full_home_names_the_spool_and_its_free_space(small_home: Path, assets,
                                                                                      tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(job_text(assets, "spooled"))
    _fill(small_home)
    r = cli("submit", str(job), home=small_home)
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr, r.stderr
    assert f"could not be written into {small_home / 'spool'}" in r.stderr and "MB free of" in r.stderr, r.stderr
    assert not list((small_home / "spool").rglob("*.part")), "no half-written job left in spool/tmp"
    assert not list((small_home / "spool" / "new").iterdir())
