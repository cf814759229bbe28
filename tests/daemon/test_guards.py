"""Nobody in, nothing blocks: intake never holds the daemon (a hung check is timed out and moved out of cur/,
a FIFO caption or a 20,000-level key is refused quickly), types and output_dirs are checked at intake, a
foreign-owned or loosened home/config is refused before any callback runs, files are owner-only, and
leftover temp files are swept at start (issue #13, points 3-7 and 9).  (cpu_slots = 0: nothing trains.)"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wanlora.daemon import client
from wanlora.daemon.spool import submit_file

from tests.daemon.conftest import REPO, job_text, other_user, wait_for

QUIET = {"cpu_slots": 0}


def _rejections(home: Path) -> dict[str, str]:
    return {p.name.removesuffix(".error"): p.read_text() for p in (home / "spool" / "rejected").glob("*.error")}


def _timed(fn, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
    t0 = time.monotonic()
    out = fn(*a, **kw)
    return out, time.monotonic() - t0


def test_a_hung_check_is_timed_out_moved_out_of_cur_and_never_blocks_the_daemon(home: Path, daemons, assets) -> None:
    submit_file(home, job_text(assets, "hangs"), name="hangs.toml")
    d = daemons({**QUIET, "intake_timeout_s": 4.0}, env={"WANLORA_FAULT_POINT": "checker-hang"})
    wait_for(lambda: os.listdir(home / "spool" / "cur"), timeout=20, what="the file to be claimed")
    for _ in range(5):  # while the check hangs, every command is answered at once
        reply, took = _timed(d.request, "list", timeout=5)
        assert reply["ok"] and took < 1.0, took
        time.sleep(0.2)
    errs = wait_for(lambda: _rejections(home), timeout=30, what="the timed-out file to be rejected")
    (name, text), = errs.items()
    assert name.startswith("hangs-") and "took longer than 4 s" in text and "intake_timeout_s" in text
    assert not os.listdir(home / "spool" / "cur")  # a restart never meets it again
    # SIGTERM stops a daemon whose check hangs (here: on the next job)
    submit_file(home, job_text(assets, "hangs2"))
    wait_for(lambda: os.listdir(home / "spool" / "cur"), timeout=20, what="the second file to be claimed")
    os.kill(d.pid, signal.SIGTERM)
    assert d.proc.wait(timeout=15) == 0
    # a restart without the fault: the first stays rejected, the second (left in cur/) is queued
    d2 = daemons(QUIET)
    jobs = wait_for(lambda: d2.request("list")["jobs"], timeout=30, what="the leftover to be queued")
    assert [j["name"] for j in jobs] == ["hangs2"] and len(_rejections(home)) == 1


def test_fifo_caption_and_deep_key_are_refused_quickly_by_the_daemon(home: Path, daemons, assets,
                                                                     tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(assets["clips"], data)
    (data / "clip_000.txt").unlink()
    os.mkfifo(data / "clip_000.txt")
    os.symlink("/dev/zero", data / "clip_00z.txt")
    shutil.copy(data / "clip_001.mp4", data / "clip_00z.mp4")
    d = daemons(QUIET)
    text = job_text(assets, "fifo").replace(str(assets["clips"]), str(data))
    reply, took = _timed(d.request, "submit", text=text, filename="fifo.toml", timeout=60)
    assert took < 30 and reply["ok"], reply  # queued with the other clips; the two bad ones named
    warn = " ".join(reply["warnings"])
    assert "clip_000.mp4: caption clip_000.txt is a FIFO" in warn and "clip_00z.txt is a device" in warn, warn
    # a 40 KB job file with one dotted key 20,000 levels deep: refused at once, naming the depth
    deep = "[job]\n" + "k" + ".k" * 20_000 + " = 1\n"
    with pytest.raises(client.DaemonError, match="nested 20001 levels deep"):
        _, took = _timed(d.request, "submit", text=deep, filename="deep.toml")
    assert d.request("ping")["ok"]


@pytest.mark.parametrize(("line", "key"), [
    ('rank = "8"', "target.rank"), ("steps = 4.0", "training.steps"), ("low_noise = 0", "multistage.low_noise"),
    ('gradient_checkpointing = "yes"', "training.gradient_checkpointing"),
])
def test_coerced_types_are_refused_at_intake(home: Path, daemons, assets, line: str, key: str) -> None:
    d = daemons(QUIET)
    good = job_text(assets, "typed")
    k = line.split(" = ")[0]
    lines = [line if ln.split(" = ")[0] == k else ln for ln in good.splitlines()]
    assert lines != good.splitlines()
    with pytest.raises(client.DaemonError, match=key.replace(".", r"\.")):
        d.request("submit", text="\n".join(lines) + "\n", filename="typed.toml")
    assert not d.request("list")["jobs"]


def test_output_dir_policy_at_intake(home: Path, daemons, assets) -> None:
    d = daemons(QUIET)
    for bad in ("/etc", "/proc/self", "../../"):
        with pytest.raises(client.DaemonError, match="job.output_dir"):
            d.request("submit", text=job_text(assets, "out", job__output_dir=bad), filename="out.toml")
    # two jobs with the same name writing into the same folder: the second is refused, naming the first
    shared = str(home / "loras")
    first = d.request("submit", text=job_text(assets, "same", job__output_dir=shared), filename="a.toml")["id"]
    with pytest.raises(client.DaemonError, match=f"job {first} .*same.*already writes"):
        d.request("submit", text=job_text(assets, "same", job__output_dir=shared), filename="b.toml")
    other = d.request("submit", text=job_text(assets, "other", job__output_dir=shared), filename="c.toml")
    # a relative output_dir is frozen as a folder inside the job's own folder
    rel = d.request("submit", text=job_text(assets, "rel", job__output_dir="loras"), filename="d.toml")["id"]
    frozen = (home / "jobs" / str(rel) / "job.toml").read_text()
    assert f'output_dir = "{home / "jobs" / str(rel) / "loras"}"' in frozen
    assert [j["name"] for j in d.request("list")["jobs"]] == ["same", "other", "rel"] and other["ok"]


def _run_daemon(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanlora.daemon", "run", "--home", str(home)], capture_output=True,
                          text=True, timeout=60, cwd=REPO)


def test_a_foreign_owned_or_loosened_home_or_config_is_refused_and_its_callback_never_runs(home: Path,
                                                                                           tmp_path: Path) -> None:
    uid, gid = other_user("wanlora_other")
    marker = tmp_path / "pwned"
    (home / "config.toml").write_text(f'callback = "touch {marker}"\n')
    os.chown(home, uid, gid)
    os.chown(home / "config.toml", uid, gid)
    os.chmod(home, 0o755)
    r = _run_daemon(home)
    assert r.returncode == 2, r
    assert f"belongs to wanlora_other, not to {pwd.getpwuid(os.geteuid()).pw_name}" in r.stderr
    assert "chown" in r.stderr and "WANLORA_HOME" in r.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o755  # not adopted: not chmod-ed, nothing created
    assert sorted(p.name for p in home.iterdir()) == ["config.toml"] and not marker.exists()
    # `wanlora daemon start` says the same and starts nothing
    r = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "daemon", "start", "--home", str(home)],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode != 0 and "belongs to wanlora_other" in r.stderr, r
    # our own home, but someone else's config.toml: refused, callback not run
    os.chown(home, 0, 0)
    r = _run_daemon(home)
    assert r.returncode == 2 and "config.toml belongs to wanlora_other" in r.stderr and "not trusted" in r.stderr, r.stderr
    # our own config.toml, writable by others: refused too
    os.chown(home / "config.toml", 0, 0)
    os.chmod(home / "config.toml", 0o666)
    r = _run_daemon(home)
    assert r.returncode == 2 and "writable by other users" in r.stderr and "chmod 600" in r.stderr, r.stderr
    # a home anyone can write into
    os.chmod(home / "config.toml", 0o600)
    os.chmod(home, 0o777)
    r = _run_daemon(home)
    assert r.returncode == 2 and "writable by other users" in r.stderr and "chmod go-w" in r.stderr, r.stderr
    assert not marker.exists()


def test_queue_and_job_files_are_owner_only_whatever_the_umask(home: Path, daemons, assets) -> None:
    old = os.umask(0o002)  # the daemon inherits a loose umask
    try:
        d = daemons(QUIET)
    finally:
        os.umask(old)
    job_id = d.request("submit", text=job_text(assets, "private"), filename="p.toml")["id"]
    job_dir = home / "jobs" / str(job_id)
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in
             (home, home / "queue.db", home / "queue.db-wal", home / "jobs", job_dir, job_dir / "job.toml",
              job_dir / "submitted.toml", job_dir / "train.log")}
    for p, m in modes.items():
        assert m & 0o077 == 0, f"{p} is {oct(m)}"


def test_leftover_temp_files_are_swept_at_start(home: Path, daemons, assets) -> None:
    d = daemons(QUIET)
    job_id = d.request("submit", text=job_text(assets, "tmpy"), filename="t.toml")["id"]
    d.kill()
    dead = subprocess.Popen(["true"])
    dead.wait()
    job_dir = home / "jobs" / str(job_id)
    (job_dir / "checkpoints").mkdir()
    left = [job_dir / f".status.json.{dead.pid}.tmp",
            job_dir / "checkpoints" / f".tmpy_high_noise_000005.safetensors.{dead.pid}.tmp",
            job_dir / "checkpoints" / f".tmpy_low_noise_000005.safetensors.{dead.pid}.tmp"]
    alive = job_dir / f".events.jsonl.{os.getpid()}.tmp"  # a writer that still lives keeps its file
    keep = job_dir / "checkpoints" / "tmpy_high_noise_000005.safetensors"
    for p in [*left, alive, keep]:
        p.write_bytes(b"x" * 1000)
    half_state = job_dir / "state" / f".tmp_step_000005_{dead.pid}"  # a save killed (or out of space) midway
    saving = job_dir / "state" / f".tmp_step_000006_{os.getpid()}"  # one still being written
    complete = job_dir / "state" / "step_000004"
    for folder in (half_state, saving, complete):
        folder.mkdir(parents=True)
        (folder / "adapters.safetensors").write_bytes(b"x" * 1000)
    d2 = daemons(QUIET)
    assert d2.request("ping")["ok"]
    assert not [p for p in left if p.exists()] and alive.exists() and keep.exists()
    assert not half_state.exists() and saving.exists() and complete.exists()
    assert "removed 4 leftover temp file(s)" in d2.log.read_text()
