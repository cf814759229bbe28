"""Issue #27, a newcomer's first day (round 3): the daemon-side rough edges."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

from wanlora.daemon import client
from wanlora.daemon.home import DaemonLock, Home

from tests.daemon.conftest import REPO, cli, job_text, wait_for


def _spool(home: Path, assets: dict[str, Path], tmp_path: Path, name: str = "first_job") -> str:
    f = tmp_path / f"{name}.toml"
    f.write_text(job_text(assets, name))
    r = cli("submit", str(f), "--parsable", home=home)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_a_job_spooled_while_the_daemon_is_down_can_be_withdrawn(home: Path, daemons, assets, tmp_path: Path) -> None:
    """``remove``/``cancel`` of a spool id with the daemon down takes the file back: starting the daemon later
    queues nothing."""
    gone = _spool(home, assets, tmp_path, "first_job")
    kept = _spool(home, assets, tmp_path, "second_job")
    r = cli("remove", gone, home=home)
    assert r.returncode == 0, r.stderr
    assert f"withdrew spooled job first_job (spool id {gone})" in r.stdout
    assert not list((home / "spool").rglob(f"{gone}*"))  # not in new/, cur/ or tmp/
    r = cli("cancel", "first_job", home=home)  # gone: the usual answer
    assert r.returncode == 1 and "daemon not running" in r.stderr
    listed = json.loads(cli("status", "--json", home=home).stdout)["jobs"]
    assert [j["spool_id"] for j in listed] == [kept]
    daemons({"cpu_slots": 0})
    wait_for(lambda: json.loads(cli("status", "--json", home=home).stdout)["jobs"][0].get("id") == 1,
             what="the kept job to be queued")
    jobs = json.loads(cli("status", "--json", home=home).stdout)["jobs"]
    assert [(j["id"], j["name"]) for j in jobs] == [(1, "second_job")]  # the withdrawn one never ran


def test_status_with_the_daemon_down_fits_80_columns_and_says_so_on_its_own_line(home: Path, assets,
                                                                                  tmp_path: Path) -> None:
    sid = _spool(home, assets, tmp_path)
    r = cli("status", home=home, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(ln) <= 80 for ln in lines), lines
    # one stream: the table, then the note on lines of its own (two streams showed up glued in captures)
    assert r.stderr == "" and lines[0].startswith("ID ") and lines[2].startswith("note: daemon not running"), lines
    shown = lines[1].split()[0]  # the ID column holds the spool id until the daemon gives a job id
    assert sid.startswith(shown) and len(shown) < len(sid)
    one = cli("status", shown, home=home)  # the prefix shown is enough to name the job
    assert one.returncode == 0 and sid in one.stdout


def test_withdrawing_never_races_a_daemon_that_holds_the_home(home: Path, assets, tmp_path: Path) -> None:
    """While a daemon holds daemon.lock (starting, its socket not up yet) the file is left to it."""
    sid = _spool(home, assets, tmp_path)
    lock = DaemonLock(Home.resolve(home))
    lock.acquire()  # what a starting daemon holds before its socket answers
    try:
        r = cli("cancel", sid, home=home)
    finally:
        lock.release()
    assert r.returncode == 1 and "a daemon is starting" in r.stderr
    assert (home / "spool" / "new" / f"{sid}.toml").is_file()  # untouched: the daemon will queue it


SLOW_FS = Path(__file__).parent / "slow_fs"  # sitecustomize: listings of chosen folders take seconds


def _timed(fn, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
    t0 = time.monotonic()
    out = fn(*a, **kw)
    return out, time.monotonic() - t0


def test_edit_and_retry_check_a_slow_dataset_outside_the_daemons_lock(home: Path, daemons, assets,
                                                                       tmp_path: Path) -> None:
    """A dataset folder on a slow disk stalls only the ``edit`` that names it: commands that take the daemon's lock
    (here ``priority``) are answered at once meanwhile; past intake_timeout_s the edit is refused, job unchanged."""
    slow, hung = tmp_path / "slow_clips", tmp_path / "hung_clips"
    shutil.copytree(assets["clips"], slow)
    shutil.copytree(assets["clips"], hung)
    env = {"PYTHONPATH": f"{SLOW_FS}{os.pathsep}{REPO}",
           "WANLORA_TEST_SLOW_DIRS": json.dumps({str(slow): 2.0, str(hung): 600.0})}
    d = daemons({"cpu_slots": 0, "intake_timeout_s": 10.0}, env=env)
    job_id = d.request("submit", text=job_text(assets, "editme"), filename="editme.toml", timeout=120)["id"]

    def while_probing(cmd: str, **kw: object) -> dict | Exception:
        """Send ``cmd`` and, until it is answered, time ``priority`` (a command that takes the daemon's lock)."""
        got: dict[str, object] = {}

        def send() -> None:
            try:
                got["reply"] = d.request(cmd, job=str(job_id), timeout=300, **kw)
            except Exception as e:  # noqa: BLE001  (the caller looks at it)
                got["reply"] = e

        t0 = time.monotonic()
        t = threading.Thread(target=send)
        t.start()
        probes = []
        while t.is_alive():
            probes.append(_timed(d.request, "priority", job=str(job_id), priority=len(probes), timeout=60)[1])
            time.sleep(0.3)
        took = time.monotonic() - t0
        assert took > 2.0 and len(probes) >= 3 and max(probes) < 1.5, (cmd, took, probes)
        return got["reply"]

    edited = job_text(assets, "edited").replace(str(assets["clips"]), str(slow))
    reply = while_probing("edit", text=edited)
    assert not isinstance(reply, Exception) and d.job(job_id)["name"] == "edited", reply
    # a hung folder: refused after intake_timeout_s, the job unchanged
    hangs = job_text(assets, "hangs").replace(str(assets["clips"]), str(hung))
    reply = while_probing("edit", text=hangs)
    assert isinstance(reply, client.DaemonError) and "longer than 10 s" in str(reply), reply
    assert "intake_timeout_s" in str(reply) and d.job(job_id)["name"] == "edited"
    # retry re-checks the frozen job.toml (now on the slow folder) the same way
    d.request("cancel", job=str(job_id))
    reply = while_probing("retry")
    assert not isinstance(reply, Exception) and d.job(job_id)["state"] == "queued", reply



def test_intake_refuses_a_hub_id_an_offline_machine_has_not_cached(home: Path, daemons, assets, tmp_path: Path) -> None:
    """HF_HUB_OFFLINE=1 and a hub id not in $HF_HOME: rejected at submit with the download that fixes it (a private
    HF_HOME: nothing is fetched); once the snapshot is there, the same file is queued."""
    from tests.engine.checks.test_offline_hub import ALL, REPO, cache_snapshot

    hf = tmp_path / "hf"
    hf.mkdir()
    d = daemons({"cpu_slots": 0}, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf), "HF_HUB_CACHE": ""})
    text = job_text(assets, "offline").replace(f'name_or_path = "{assets["model"]}"', f'name_or_path = "{REPO}"')
    assert REPO in text
    try:
        d.request("submit", text=text, filename="offline.toml", timeout=120)
        raise AssertionError("queued a job whose model an offline machine cannot load")
    except client.DaemonError as e:
        assert "rejected" in str(e) and "HF_HUB_OFFLINE is set" in str(e) and f"hf download {REPO}" in str(e), e
    cache_snapshot(hf, ALL)
    assert d.request("submit", text=text, filename="offline.toml", timeout=120)["id"] == 1


def test_a_resumed_job_never_shows_the_previous_runs_total(tmp_path: Path) -> None:
    """Edited 60 → 80 steps, resumed: until the new trainer writes its status, status/wait show the queue's
    80 (not the old status.json's 60) and no STALE; then the trainer's own numbers."""
    from wanlora.daemon.queue import Queue
    from wanlora.daemon.views import job_view
    from wanlora.engine.config import jobdir

    home = Home.resolve(tmp_path / "h")
    home.ensure()
    with Queue(home.db) as q:
        row = q.add(name="edited", gpus_req="auto", total_steps=80)
        jd = home.job_dir(row.id)
        jd.mkdir(parents=True)
        before = time.time() - 600  # the paused run's last status: step 0 of its 60
        jobdir.write_json_atomic(jd / jobdir.STATUS, {"state": "running", "step": 0, "total_steps": 60,
                                                      "heartbeat_ts": before, "heartbeat_interval_s": 10})
        row = q.update(row.id, state="running", started_ts=time.time(), step=40, saved_step=40)
        v = job_view(home, row)
        assert (v["step"], v["total_steps"], bool(v.get("stale"))) == (40, 80, False)
        jobdir.write_json_atomic(jd / jobdir.STATUS, {"state": "running", "step": 41, "total_steps": 80,
                                                      "heartbeat_ts": time.time() + 1, "heartbeat_interval_s": 10})
        v = job_view(home, row)
        assert (v["step"], v["total_steps"], bool(v.get("stale"))) == (41, 80, False)


def test_wait_returns_for_a_held_job(home: Path, daemons, assets) -> None:
    """A job held in the queue (`wanlora pause` on a queued job) only moves on `wanlora resume`: wait returns."""
    d = daemons({"cpu_slots": 0})
    job_id = d.request("submit", text=job_text(assets, "later"), filename="later.toml", timeout=120)["id"]
    d.request("pause", job=str(job_id))
    r = cli("wait", str(job_id), "--timeout", "20", home=home, timeout=60)
    assert r.returncode == 1 and f"job {job_id} later: held" in r.stdout, (r.returncode, r.stdout)
