"""Issue #14, the CLI a newcomer meets: spooled jobs are visible, names are never silently ambiguous,
attach says when a job does not exist, jobs can be edited, waited for and cleaned (pueue's verbs)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.daemon.conftest import cli, job_text, wait_for


def test_jobs_submitted_while_the_daemon_is_down_are_shown_with_their_spool_id(home: Path, daemons, assets,
                                                                               tmp_path: Path) -> None:
    f = tmp_path / "first.toml"
    f.write_text(job_text(assets, "first_job"))
    r = cli("submit", str(f), "--parsable", home=home)
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip()
    assert sid.startswith("first-") and (home / "spool" / "new" / f"{sid}.toml").is_file()
    st = cli("status", home=home)
    assert "first_job" in st.stdout and "SUBMITTED" in st.stdout and "waiting for the daemon" in st.stdout
    assert sid.rsplit("-", 1)[0] in st.stdout  # the table shows the unique prefix (any command takes it)
    js = json.loads(cli("status", "--json", home=home).stdout)
    assert [(j["name"], j["state"], j["spool_id"]) for j in js["jobs"]] == [("first_job", "submitted", sid)]
    one = cli("status", sid, home=home)
    assert one.returncode == 0 and "submitted, waiting for the daemon" in one.stdout
    # once a daemon takes it in, it is an ordinary job with an id (and no longer listed as submitted)
    daemons({"cpu_slots": 0})
    wait_for(lambda: json.loads(cli("status", "--json", home=home).stdout)["jobs"][0].get("id") == 1,
             what="the spooled job to get an id")
    assert "SUBMITTED" not in cli("status", home=home).stdout


def test_a_shared_name_is_an_error_listing_the_jobs(home: Path, daemons, assets, tmp_path: Path) -> None:
    daemons({"cpu_slots": 0})
    f = tmp_path / "cpu_ok.toml"
    f.write_text(job_text(assets, "cpu_ok"))
    first = cli("submit", str(f), home=home)
    assert first.returncode == 0 and "note:" not in first.stderr
    second = cli("submit", str(f), home=home)
    assert second.returncode == 0 and "same name as job(s) 1 (queued)" in second.stderr
    cli("submit", str(f), home=home)
    r = cli("cancel", "cpu_ok", home=home)
    assert r.returncode == 1
    assert "3 jobs are named 'cpu_ok': 1 (queued), 2 (queued), 3 (queued)" in r.stderr and "give the id" in r.stderr
    states = [j["state"] for j in json.loads(cli("status", "--json", home=home).stdout)["jobs"]]
    assert states == ["queued", "queued", "queued"]  # nothing was cancelled
    assert "3 jobs are named" in cli("status", "cpu_ok", home=home).stderr
    assert cli("cancel", "2", home=home).returncode == 0


def test_attach_to_a_missing_job_exits_non_zero_and_says_so(home: Path) -> None:
    r = cli("attach", "99", home=home, timeout=30)
    assert r.returncode == 1 and "no job '99'" in r.stderr and "wanlora status" in r.stderr


def test_attach_without_a_job_picks_the_running_one_else_the_newest(tmp_path: Path) -> None:
    from wanlora.tui.commands.attach import pick

    def job(i: int, name: str, state: str) -> None:
        d = tmp_path / "jobs" / str(i)
        d.mkdir(parents=True)
        (d / "job.toml").write_text(f'[job]\nname = "{name}"\n')
        (d / "status.json").write_text(json.dumps({"state": state, "heartbeat_ts": 4e9, "heartbeat_interval_s": 10}))

    job(4, "done", "completed")
    job(5, "train", "running")
    job(6, "later", "queued")
    rows = [{"id": 4, "name": "done", "state": "completed"}, {"id": 5, "name": "train", "state": "running"},
            {"id": 6, "name": "later", "state": "queued"}]
    assert pick(tmp_path, None, rows) == ("5", "")
    rows[1]["state"] = "completed"
    assert pick(tmp_path, None, rows) == ("6", "")
    assert pick(tmp_path, "train", rows) == ("5", "")


def test_edit_replaces_a_queued_job_only_after_it_validates(home: Path, daemons, assets, tmp_path: Path) -> None:
    d = daemons({"cpu_slots": 0})
    f = tmp_path / "e.toml"
    f.write_text(job_text(assets, "editme", steps=20))
    assert cli("submit", str(f), home=home).returncode == 0
    frozen = home / "jobs" / "1" / "job.toml"
    before = frozen.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(before.replace("num_frames = 9", "num_frames = 10"))
    r = cli("edit", "1", "--file", str(bad), home=home)
    assert r.returncode == 1 and "datasets[0].num_frames" in r.stderr and "not replaced" in r.stderr
    assert frozen.read_text() == before
    # $EDITOR is a script that changes the steps: the daemon swaps the file in and updates the row
    ed = tmp_path / "ed.sh"
    ed.write_text("#!/bin/sh\nsed -i 's/^steps = 20$/steps = 30/' \"$1\"\n")
    ed.chmod(ed.stat().st_mode | stat.S_IXUSR)
    r = cli("edit", "1", home=home, env={"EDITOR": str(ed), "VISUAL": ""})
    assert r.returncode == 0, r.stderr
    assert "job 1 updated" in r.stdout
    assert "steps = 30" in frozen.read_text() and (home / "jobs" / "1" / "job.toml.prev").read_text() == before
    assert d.job(1)["total_steps"] == 30
    # a job that is not editable says why
    assert cli("cancel", "1", home=home).returncode == 0
    r = cli("edit", "1", "--file", str(f), home=home)
    assert r.returncode == 1 and "is cancelled" in r.stderr


def test_wait_and_clean(home: Path, daemons, assets, tmp_path: Path) -> None:
    daemons({"cpu_slots": 0})
    assert cli("wait", home=home).stdout.startswith("nothing to wait for")
    f = tmp_path / "w.toml"
    f.write_text(job_text(assets, "waiter"))
    assert cli("submit", str(f), home=home).returncode == 0
    r = cli("wait", "1", "--timeout", "1", home=home)
    assert r.returncode == 124 and "job 1 waiter: queued" in r.stdout
    assert cli("cancel", "1", home=home).returncode == 0
    r = cli("wait", "waiter", home=home)
    assert r.returncode == 1 and "cancelled" in r.stdout
    r = cli("clean", home=home)
    assert r.returncode == 0 and "removed 1 finished job(s)" in r.stdout and "1 waiter (cancelled)" in r.stdout
    assert (home / "jobs" / "1" / "job.toml").is_file()  # the folder stays
    assert json.loads(cli("status", "--json", home=home).stdout)["jobs"] == []
    assert "nothing to clean" in cli("clean", home=home).stdout


def test_sample_now_without_prompts_says_there_is_nothing_to_render(home: Path, daemons, assets, tmp_path) -> None:
    daemons({"cpu_slots": 0})
    f = tmp_path / "s.toml"
    f.write_text(job_text(assets, "noprompt"))
    assert cli("submit", str(f), home=home).returncode == 0
    r = cli("sample-now", "1", home=home)
    assert r.returncode == 1 and "no [[sample.prompts]]" in r.stderr


def test_version_and_install_service_unit_path(home: Path, tmp_path: Path) -> None:
    r = cli("--version", home=home)
    assert r.returncode == 0 and r.stdout.startswith("wanlora ")
    unit = tmp_path / "units" / "wanlora.service"
    r = cli("daemon", "install-service", "--unit", str(unit), home=home,
            env={"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert r.returncode == 0 and unit.is_file()
    assert f"systemctl --user enable --now {unit}" in r.stdout
    assert os.path.isabs(str(unit))


def test_queue_reason_says_priority_only_when_a_job_ahead_has_a_higher_one(tmp_path: Path) -> None:
    import io

    from wanlora.daemon.home import Home
    from wanlora.daemon.queue import REASON_WAITING, Queue
    from wanlora.daemon.supervisor import Daemon, Watch

    home = Home.resolve(tmp_path / "h")
    home.ensure()
    d = Daemon(home, log=io.StringIO())
    d.queue = Queue(home.db)
    d.slots, d.gpu_names = ["0"], {"0": "GPU"}
    busy = d.q.add(name="busy", gpus_req="auto", total_steps=10)
    d.q.update(busy.id, state="running", gpus="0")
    d.watch[busy.id] = Watch(1, None)  # the one GPU is busy
    a = d.q.add(name="a", gpus_req="auto", total_steps=10, priority=0)
    b = d.q.add(name="b", gpus_req="auto", total_steps=10, priority=0)
    c = d.q.add(name="c", gpus_req="auto", total_steps=10, priority=-1)
    d._schedule()
    reasons = {r.name: r.reason for r in d.q.all()}
    assert reasons["a"] == REASON_WAITING
    assert reasons["b"] == f"waiting for GPU (behind job {a.id}, submitted earlier)"  # equal priority: not "priority"
    assert reasons["c"] == f"priority (job {a.id} has a higher one)"
    assert b.id < c.id


def test_resuming_note_is_cleared_once_the_job_has_stepped_past_it(tmp_path: Path) -> None:
    import io

    from wanlora.daemon.home import Home
    from wanlora.daemon.queue import Queue
    from wanlora.daemon.supervisor import Daemon, Watch

    home = Home.resolve(tmp_path / "h")
    home.ensure()
    d = Daemon(home, log=io.StringIO())
    d.queue = Queue(home.db)
    row = d.q.add(name="r", gpus_req="auto", total_steps=100)
    row = d.q.update(row.id, state="running", reason="restart 1: resuming from step 34", start_saved_step=34,
                     step=34, saved_step=34)
    jd = home.job_dir(row.id)
    jd.mkdir(parents=True)
    w = Watch(1, None)
    (jd / "events.jsonl").write_text(json.dumps({"v": 1, "seq": 1, "ts": 1, "type": "state", "state": "resumed",
                                                 "step": 34}) + "\n")
    row = d._follow(row, w)
    assert row.reason == "restart 1: resuming from step 34"  # still true at step 34
    with open(jd / "events.jsonl", "a") as f:
        f.write(json.dumps({"v": 1, "seq": 2, "ts": 2, "type": "step", "step": 35, "total_steps": 100}) + "\n")
    assert d._follow(row, w).reason == ""


def test_retry_of_a_job_this_machine_cannot_run_says_so_instead_of_failing_again(tmp_path: Path, monkeypatch,
                                                                                 assets) -> None:
    import io

    from wanlora.daemon.home import Home
    from wanlora.daemon.intake import Intake
    from wanlora.daemon.queue import Queue
    from wanlora.daemon.supervisor import Daemon

    from tests.daemon.conftest import REPO

    monkeypatch.delenv("WANLORA_VALIDATE_ANYWHERE", raising=False)
    # retry checks the file in intake's checker process: there, this machine has no NVIDIA driver
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent / "no_gpu"), str(REPO)]))
    home = Home.resolve(tmp_path / "h")
    home.ensure()
    d = Daemon(home, log=io.StringIO())
    d.queue = Queue(home.db)
    d.callbacks = type("NoCallbacks", (), {"fire": lambda self, row: None})()
    d.intake = Intake(home, d.config, d.queue, d.lock, log=lambda m: None, on_queued=lambda r: None)
    row = d.q.add(name="q", gpus_req="auto", total_steps=10)
    row = d.q.update(row.id, state="failed", reason="config")
    jd = home.job_dir(row.id)
    jd.mkdir(parents=True)
    (jd / "job.toml").write_text(job_text(assets, "q") .replace('transformer = "none"', 'transformer = "fp8"'))
    try:
        refused = d.handle({"cmd": "retry", "job": str(row.id)}, lambda m: None)
        assert not refused["ok"] and d.q.get(row.id).state == "failed", refused
        e = refused["error"]
        assert "would fail again" in e and "quantization.transformer" in e and "wanlora edit" in e, e
        (jd / "job.toml").write_text(job_text(assets, "q"))
        assert "queued again" in d.handle({"cmd": "retry", "job": str(row.id)}, lambda m: None)["message"]
    finally:
        d.intake.stop()
