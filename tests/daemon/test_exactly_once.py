"""Nothing lost, nothing doubled: a daemon killed in flight of a submit or at any step of intake queues each
job exactly once (issue #13, points 1 and 2), and a fault-injection run of random SIGKILLs during submits and
intake ends with zero lost and zero duplicated jobs.  (cpu_slots = 0: nothing trains here.)"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from wanlora.daemon import client
from wanlora.daemon.spool import new_submission_id, submit_file
from wanlora.engine.config.io import load_job

from tests.daemon.conftest import cli, job_text, wait_for

QUIET = {"cpu_slots": 0}


def _drained(home: Path) -> bool:
    spool = home / "spool"
    loose = [p for p in spool.iterdir() if p.is_file() and not p.name.startswith(".")]
    return not loose and not os.listdir(spool / "new") and not os.listdir(spool / "cur")


def _jobs(d) -> list[dict]:  # noqa: ANN001
    return d.request("list")["jobs"]


def _assert_whole(jobs: list[dict]) -> None:
    """Every queued job has a complete folder: the frozen job.toml loads and names the job."""
    for j in jobs:
        frozen = load_job(Path(j["job_dir"]) / "job.toml")
        assert frozen.job.name == j["name"] and j["state"] == "queued", j


@pytest.mark.parametrize("point", ["submit-reply", "submit-spooled"])
def test_submit_whose_daemon_dies_in_flight_is_queued_once(home: Path, daemons, assets, tmp_path: Path,
                                                           point: str) -> None:
    job = tmp_path / "inflight.toml"
    job.write_text(job_text(assets, "inflight"))
    d = daemons(QUIET, env={"WANLORA_FAULT_POINT": point})
    r = cli("submit", str(job), home=home)
    assert d.proc.wait(timeout=30) == -signal.SIGKILL  # the daemon died while the client waited for its answer
    assert r.returncode == 0, r.stderr
    assert "closed the connection" in r.stderr, r.stderr
    if point == "submit-reply":  # committed before the kill: the client learns its id from queue.db
        assert r.stdout.strip() == "Submitted job 1", (r.stdout, r.stderr)
    else:  # spooled by the daemon before the kill: the client does not spool a second copy
        waiting = os.listdir(home / "spool" / "new") + os.listdir(home / "spool" / "cur")
        assert "spooled" in r.stderr and len(waiting) == 1, waiting
    d2 = daemons(QUIET)
    wait_for(lambda: _drained(home) and _jobs(d2), timeout=30, what="the spool to drain")
    jobs = _jobs(d2)
    assert [j["name"] for j in jobs] == ["inflight"], jobs
    _assert_whole(jobs)
    # asking by the submission id (what the client does after a drop) finds that one job
    sid = (Path(jobs[0]["job_dir"]) / ".submission").read_text().strip()
    assert d2.request("submission", submission_id=sid)["id"] == jobs[0]["id"]


def test_the_same_submission_sent_twice_is_one_job(home: Path, daemons, assets) -> None:
    d = daemons(QUIET)
    sid = new_submission_id()
    text = job_text(assets, "twice")
    a = d.request("submit", text=text, filename="twice.toml", submission_id=sid)
    b = d.request("submit", text=text, filename="twice.toml", submission_id=sid)
    submit_file(home, text, name="twice.toml", submission_id=sid)  # and the spool fallback, with the same id
    wait_for(lambda: _drained(home), timeout=20, what="the spool to drain")
    assert a["id"] == b["id"] and b["duplicate"] is True
    assert [j["name"] for j in _jobs(d)] == ["twice"]
    d.kill()  # across a restart, too
    d2 = daemons(QUIET)
    assert d2.request("submit", text=text, filename="twice.toml", submission_id=sid)["id"] == a["id"]
    assert len(_jobs(d2)) == 1


@pytest.mark.parametrize("point", ["intake-folder", "intake-commit", "intake-unlink"])
def test_daemon_killed_at_each_step_of_intake_loses_nothing(home: Path, daemons, assets, point: str) -> None:
    """Folder built but not renamed / renamed but not committed / committed but spool file not removed."""
    submit_file(home, job_text(assets, "atomic", steps=77))
    d = daemons(QUIET, wait=False, env={"WANLORA_FAULT_POINT": point})
    assert d.proc.wait(timeout=60) == -signal.SIGKILL
    left_in_cur = os.listdir(home / "spool" / "cur")
    assert len(left_in_cur) == 1, left_in_cur  # the spool file is never deleted before the commit
    d2 = daemons(QUIET)
    wait_for(lambda: _drained(home) and _jobs(d2), timeout=30, what="the leftover intake to finish")
    jobs = _jobs(d2)
    assert [(j["name"], j["total_steps"]) for j in jobs] == [("atomic", 77)], jobs
    _assert_whole(jobs)
    assert not [p for p in (home / "jobs").iterdir() if p.name.startswith(".intake-")]
    # and `retry`-style trouble is gone: the job folder has its job.toml, so starting it would not fail (config)
    assert (home / "jobs" / str(jobs[0]["id"]) / "submitted.toml").read_text() == job_text(assets, "atomic", steps=77)


def test_random_sigkills_during_submits_and_intake_lose_and_double_nothing(home: Path, daemons, assets) -> None:
    """A few rounds: submitters (socket with spool fallback, and plain drops) while the daemon is SIGKILLed at
    random moments, sometimes exactly at an intake step; at the end every job is queued exactly once."""
    rng = random.Random(1313)
    texts = {f"f{i:02d}": job_text(assets, f"f{i:02d}", steps=100 + i) for i in range(24)}
    names = list(texts)
    outcomes: dict[str, client.Submitted] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def submitter(batch: list[str]) -> None:
        for n in batch:
            try:
                if rng.random() < 0.25:  # a plain drop (scp into spool/), no submission id
                    tmp = home / "spool" / f".{n}.part"
                    tmp.write_text(texts[n])
                    os.rename(tmp, home / "spool" / f"{n}.toml")
                    continue
                done = client.submit(home, texts[n], f"{n}.toml", timeout=60)
                with lock:
                    outcomes[n] = done
            except Exception as e:  # noqa: BLE001 - any failure is a test failure, reported below
                errors.append(f"{n}: {type(e).__name__}: {e}")
            time.sleep(rng.uniform(0.0, 0.15))

    (home / "spool").mkdir(parents=True, exist_ok=True)
    points = ["", "", "intake-folder", "intake-commit", "intake-unlink", "submit-reply", "submit-spooled"]
    batches = [names[i::3] for i in range(3)]
    threads = [threading.Thread(target=submitter, args=(b,)) for b in batches]
    d = daemons(QUIET, env={"WANLORA_FAULT_POINT": rng.choice(points)})
    for t in threads:
        t.start()
    kills = 0
    while any(t.is_alive() for t in threads) or kills < 4:
        time.sleep(rng.uniform(0.1, 1.2))
        if d.proc.poll() is None:
            d.kill(signal.SIGKILL)
        kills += 1
        d = daemons(QUIET, wait=False, env={"WANLORA_FAULT_POINT": rng.choice(points)})
        try:
            d.ready(timeout=30)
        except AssertionError:  # it hit its fault point while starting: that is a kill too
            pass
    for t in threads:
        t.join()
    d.kill()
    final = daemons(QUIET)
    wait_for(lambda: _drained(home), timeout=90, interval=0.2, what="the spool to drain")
    assert not errors, errors
    jobs = _jobs(final)
    got = sorted(j["name"] for j in jobs)
    assert got == sorted(names), f"lost: {sorted(set(names) - set(got))}, doubled: " \
                                 f"{sorted(n for n in set(got) if got.count(n) > 1)} after {kills} kills"
    _assert_whole(jobs)
    for j in jobs:
        assert j["total_steps"] == 100 + int(j["name"][1:])
    for n, done in outcomes.items():  # an id the client printed is the job that got queued
        if done.job_id is not None:
            assert next(j for j in jobs if j["name"] == n)["id"] == done.job_id
    assert not list((home / "spool" / "rejected").glob("*.error")), "nothing valid may be rejected"


def test_a_queue_db_from_before_submission_ids_is_upgraded_and_still_readable(tmp_path: Path) -> None:
    import sqlite3

    from wanlora.daemon.queue import SCHEMA, Queue

    db = tmp_path / "queue.db"
    old = SCHEMA.replace("    submission_id TEXT NOT NULL DEFAULT '',\n", "").split("CREATE UNIQUE INDEX IF NOT EXISTS jobs_sub")[0]
    con = sqlite3.connect(db)
    con.executescript(old)
    con.execute("INSERT INTO jobs(name, state, submitted_ts, updated_ts) VALUES ('old', 'queued', 1, 1)")
    con.commit()
    con.close()
    ro = Queue(db, readonly=True)  # `wanlora status` with the daemon down, before any upgrade
    assert [r.name for r in ro.all()] == ["old"] and ro.by_submission("a" * 32) is None
    ro.close()
    q = Queue(db)  # the daemon upgrades it in place
    row = q.add(name="new", gpus_req="auto", total_steps=5, submission_id="b" * 32)
    assert q.by_submission("b" * 32).id == row.id and [r.name for r in q.all()] == ["old", "new"]
    with pytest.raises(sqlite3.IntegrityError):
        q.add(name="again", gpus_req="auto", total_steps=5, submission_id="b" * 32)
    assert len(q.all()) == 2
