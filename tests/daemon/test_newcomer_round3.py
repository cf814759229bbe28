"""Issue #27, a newcomer's first day (round 3): the daemon-side rough edges."""

from __future__ import annotations

import json
from pathlib import Path

from wanlora.daemon.home import DaemonLock, Home

from tests.daemon.conftest import cli, job_text, wait_for


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
