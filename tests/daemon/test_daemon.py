"""The daemon as a process: singleton lock, owner-only socket (SO_PEERCRED), no torch, the protocol, queue
control on queued jobs, callbacks, detaching, the systemd unit and doctor.  No trainer runs here
(cpu_slots = 0 keeps jobs queued)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from wanlora.daemon import client, protocol
from wanlora.daemon.spool import submit_file

from tests.daemon.conftest import REPO, cli, job_text, other_user, wait_for


def _queue(d, assets, *names: str) -> list[int]:  # noqa: ANN001
    return [d.request("submit", text=job_text(assets, n), filename=f"{n}.toml")["id"] for n in names]


def test_a_second_daemon_on_the_same_home_refuses_and_names_the_first(home: Path, daemons) -> None:
    first = daemons({"cpu_slots": 0})
    second = subprocess.run([sys.executable, "-m", "wanlora.daemon", "run", "--home", str(home)], capture_output=True,
                            text=True, timeout=30, cwd=REPO)
    assert second.returncode == 3
    assert "already running" in second.stderr and f"pid {first.pid}" in second.stderr
    assert first.request("ping")["pid"] == first.pid  # the first one is untouched
    # `wanlora daemon start` on a home with a live daemon says so and starts nothing
    r = cli("daemon", "start", home=home)
    assert r.returncode == 0 and f"already running (pid {first.pid})" in r.stdout
    # the lock is the kernel's: once the first dies (even by SIGKILL) a new daemon can start
    first.kill(signal.SIGKILL)
    assert daemons({"cpu_slots": 0}).request("ping")["pid"] != first.pid


def _connect_as(uid: int, gid: int, sock: Path) -> dict:
    """Fork, drop to another user, connect and send ``list``; the child reports what happened through a pipe.

    (A forked child, not a new interpreter: this Python lives under /root, which the other user cannot read.)
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            try:
                s.connect(str(sock))
                try:
                    s.sendall(b'{"v":1,"cmd":"list"}\n')
                except BrokenPipeError:  # the server may have answered and hung up already
                    pass
                line = s.makefile("rb").readline().decode().strip() or json.dumps({"closed": True})
            except OSError as e:
                line = json.dumps({"connect_error": e.errno})
            os.write(w, line.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_socket_and_home_are_owner_only_and_other_users_are_refused(home: Path, daemons, assets) -> None:
    d = daemons({"cpu_slots": 0})
    _queue(d, assets, "secret_job")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_ISSOCK((home / "daemon.sock").lstat().st_mode)
    assert stat.S_IMODE((home / "daemon.sock").lstat().st_mode) == 0o600
    uid, gid = other_user()  # for the SO_PEERCRED check

    def as_other() -> dict:
        return _connect_as(uid, gid, home / "daemon.sock")

    # the folder permissions stop another user at the door
    assert as_other() == {"connect_error": 13}
    # loosened by hand, the socket still refuses a peer whose uid is not the daemon's (SO_PEERCRED)
    os.chmod(home.parent, 0o755)  # mkdtemp's folder is 0700 too
    os.chmod(home, 0o755)
    os.chmod(home / "daemon.sock", 0o666)
    reply = as_other()
    assert reply.get("ok") is False, reply
    assert "permission denied" in reply["error"] and "jobs" not in reply
    assert "refused a connection from uid" in d.log.read_text()
    assert d.request("list")["jobs"][0]["name"] == "secret_job"  # the owner still gets in


def _maps_have_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_daemon_and_status_never_import_torch(home: Path, daemons, assets) -> None:
    d = daemons({"cpu_slots": 0})
    _queue(d, assets, "validated_job")  # intake ran the full validator (data scan included)
    submit_file(home, job_text(assets, "spooled_job"))
    wait_for(lambda: len(d.request("list")["jobs"]) == 2, timeout=20, what="both jobs queued")
    assert d.request("ping")["torch_loaded"] is False
    assert not _maps_have_torch(d.pid), "the daemon process has libtorch mapped"
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "wanlora.tui.cli", "status"], capture_output=True,
                       text=True, env={**os.environ, "WANLORA_HOME": str(home)}, cwd=REPO, timeout=60)
    assert r.returncode == 0 and "validated_job" in r.stdout
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "wanlora.daemon.client" in imported, "the import log was not parsed"
    assert not any(m == "torch" or m.startswith("torch.") for m in imported)


def test_protocol_errors_are_answered_and_the_daemon_stays_up(home: Path, daemons) -> None:
    d = daemons({"cpu_slots": 0})
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(home / "daemon.sock"))
        f = s.makefile("rb")
        for line, expect in [(b"not json\n", "not a JSON line"), (b"[1,2]\n", "JSON object"),
                             (b'{"v":2,"cmd":"list"}\n', "version 2"), (b'{"v":1,"cmd":"explode"}\n', "unknown command"),
                             (b'{"v":1,"cmd":"cancel","job":"999"}\n', "no job '999'"),
                             (b'{"v":1,"cmd":"status"}\n', "which job")]:
            s.sendall(line)
            reply = json.loads(f.readline())
            assert reply["v"] == 1 and reply["ok"] is False and expect in reply["error"], (line, reply)
    assert d.request("ping")["pid"] == d.pid
    with pytest.raises(client.DaemonError, match="unknown command"):
        d.request("explode")
    assert protocol.decode(protocol.encode({"ok": True}))["v"] == protocol.VERSION


def test_queue_control_on_queued_jobs_and_callbacks(home: Path, daemons, assets) -> None:
    out = home.parent / "callbacks.jsonl"
    cb = ("python3 -c \"import json,os; print(json.dumps({k: os.environ[k] for k in ('WANLORA_JOB_ID', "
          "'WANLORA_STATE', 'WANLORA_REASON', 'WANLORA_STEP', 'WANLORA_OUTPUT_DIR')}))\" >> " + str(out))
    d = daemons({"cpu_slots": 0, "callback": cb.replace('"', '\\"')})
    a, b, c = _queue(d, assets, "job_a", "job_b", "job_c")
    # priorities reorder the queue; `top` puts a job above all others
    d.request("priority", job=str(b), priority=5)
    r = cli("priority", str(c), "top", home=home)
    assert r.returncode == 0 and "priority 6" in r.stdout, r.stderr
    jobs = {j["id"]: j for j in d.request("list")["jobs"]}
    assert jobs[c]["priority"] == 6 and jobs[b]["priority"] == 5
    # pause on a queued job holds it; resume releases it (Slurm's hold / release)
    r = cli("pause", str(a), home=home)
    assert r.returncode == 0 and "held" in r.stdout
    wait_for(lambda: d.job(a)["reason"] == "held", timeout=5, what="reason held")
    assert d.job(a)["state"] == "queued"
    assert cli("resume", str(a), home=home).returncode == 0
    wait_for(lambda: d.job(a)["reason"].startswith("waiting for GPU"), timeout=5, what="released")
    # cancel, retry, remove; errors name the problem
    assert cli("cancel", str(b), home=home).returncode == 0
    assert d.job(b)["state"] == "cancelled" and d.job(b)["reason"] == "cancelled by user"
    r = cli("cancel", str(b), home=home)
    assert r.returncode == 1 and "already cancelled" in r.stderr
    r = cli("save-now", str(a), home=home)
    assert r.returncode == 1 and "only a running job" in r.stderr
    assert cli("retry", "job_b", home=home).returncode == 0  # by name works too
    assert d.job(b)["state"] == "queued"
    r = cli("remove", str(c), home=home)
    assert r.returncode == 0 and "kept" in r.stdout and (home / "jobs" / str(c) / "job.toml").exists()
    assert [j["id"] for j in d.request("list")["jobs"]] == [a, b]
    # ids stay monotonic after a remove
    assert _queue(d, assets, "job_d") == [c + 1]
    # the callback saw every state change with the job in its environment
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 6, timeout=10, what=f"callbacks\n{d.log.read_text()[-3000:]}\n{(home / 'config.toml').read_text()}")
    calls = [json.loads(x) for x in out.read_text().splitlines()]
    seen = [(int(x["WANLORA_JOB_ID"]), x["WANLORA_STATE"]) for x in calls]
    assert (b, "cancelled") in seen and seen.count((b, "queued")) == 2 and (c + 1, "queued") in seen
    cancel = next(x for x in calls if x["WANLORA_STATE"] == "cancelled")
    assert cancel["WANLORA_REASON"] == "cancelled by user" and cancel["WANLORA_OUTPUT_DIR"].endswith(f"jobs/{b}/checkpoints")


def test_status_works_without_the_daemon(home: Path, daemons, assets) -> None:
    d = daemons({"cpu_slots": 0})
    (job_id,) = _queue(d, assets, "offline_view")
    d.kill(signal.SIGKILL)
    r = cli("status", home=home)
    assert r.returncode == 0 and "offline_view" in r.stdout and "QUEUED" in r.stdout
    assert "daemon not running" in r.stdout and "wanlora daemon start" in r.stdout  # a line after the table
    r = cli("status", str(job_id), "--json", home=home)
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["daemon"] is None and data["job"]["name"] == "offline_view"
    r = cli("cancel", str(job_id), home=home)
    assert r.returncode == 1 and "daemon not running — start it with `wanlora daemon start`" in r.stderr


def test_daemon_start_detaches_and_stop_leaves_it_stopped(home: Path) -> None:
    r = cli("daemon", "start", home=home)
    assert r.returncode == 0 and "daemon started" in r.stdout, r.stderr
    info = client.request(home, "ping")
    pid = info["pid"]
    try:
        # detached: its own session, no terminal, stdio in daemon.log, not a child of the command that started it
        assert os.getsid(pid) != os.getsid(0) and os.getsid(pid) != pid
        assert Path(f"/proc/{pid}/fd/1").resolve() == (home / "daemon.log").resolve()
        assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) != os.getpid()
        r = cli("daemon", "status", home=home)
        assert r.returncode == 0 and f"pid {pid}" in r.stdout
    finally:
        r = cli("daemon", "stop", home=home)
    assert r.returncode == 0 and "stopping" in r.stdout
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(),
             timeout=10, what="the daemon to exit")
    r = cli("daemon", "status", home=home)
    assert r.returncode == 3 and "not running" in r.stdout
    assert not (home / "daemon.sock").exists()


def test_install_service_writes_a_restart_safe_unit(home: Path, tmp_path: Path) -> None:
    unit = tmp_path / "wanlora.service"
    r = cli("daemon", "install-service", "--unit", str(unit), home=home, env={"USER": "alice"})
    assert r.returncode == 0, r.stderr
    text = unit.read_text()
    assert "Restart=on-failure" in text and f"Environment=WANLORA_HOME={home}" in text
    assert "KillMode=process" in text  # restarting the daemon must not kill the trainers
    assert "-m wanlora.daemon run" in text and "WantedBy=default.target" in text
    # a unit outside systemd's folders is enabled by its path (by name systemd would not find it: issue #14)
    assert f"systemctl --user enable --now {unit}" in r.stdout and "loginctl enable-linger alice" in r.stdout


def test_doctor_reports_the_machine_without_torch(home: Path) -> None:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "wanlora.tui.cli", "doctor", "--json"],
                       capture_output=True, text=True, env={**os.environ, "WANLORA_HOME": str(home)}, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0, r.stdout
    checks = json.loads(r.stdout)
    topics = {c["topic"] for c in checks}
    assert {"torch", "packages", "ram", "disk", "home", "daemon", "systemd"} <= topics
    torch_line = next(c for c in checks if c["topic"] == "torch")
    import importlib.metadata as md

    assert md.version("torch") in torch_line["message"]
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported
