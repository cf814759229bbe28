"""Fixtures for the daemon tests: real daemons (``python -m wanlora.daemon run``) on private homes, a real tiny
model and real clips, and clean-up that kills every process a test started (by pid, never by name)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wanlora.daemon import client
from wanlora.daemon.home import Home

REPO = Path(__file__).resolve().parents[2]


def wait_for(pred, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


class DaemonProc:
    """One ``python -m wanlora.daemon run`` process on a home (a real process the test may SIGKILL)."""

    def __init__(self, home: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.home = Home.resolve(home)
        self.log = log
        env = {**os.environ, "WANLORA_HOME": str(home), "PYTHONPATH": str(REPO), **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "wanlora.daemon", "run", "--home", str(home)],
                                     stdin=subprocess.DEVNULL, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                                     env=env, cwd=REPO, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self, timeout: float = 20.0) -> DaemonProc:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            return client.running(self.home)

        wait_for(up, timeout, what="the daemon to answer")
        return self

    def request(self, cmd: str, **kw: Any) -> dict[str, Any]:
        return client.request(self.home, cmd, **kw)

    def job(self, job_id: int) -> dict[str, Any]:
        return self.request("status", job=str(job_id))["job"]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=15)


@pytest.fixture
def home() -> Iterator[Path]:
    """A private home with a short path (Unix socket paths are limited to 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="wl", dir="/tmp"))
    h = d / "home"
    h.mkdir()
    yield h
    # kill any trainer a test left behind (by the pid in its run.lock), then remove the folder
    for lock in (h / "jobs").glob("*/run.lock"):
        from wanlora.daemon import adopt

        if adopt.lock_held(lock.parent):
            pid = adopt.lock_pid(lock.parent)
            if pid and pid > 1:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemons(home: Path) -> Iterator[Any]:
    """``start(**config)`` writes config.toml and starts a daemon; all are killed at the end."""
    started: list[DaemonProc] = []

    def start(config: dict[str, Any] | None = None, wait: bool = True, env: dict[str, str] | None = None) -> DaemonProc:
        cfg = {"rescan_interval_s": 0.3, "poll_interval_s": 0.1, "settle_s": 0.6, **(config or {})}
        lines = [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in cfg.items()]
        (home / "config.toml").write_text("\n".join(lines) + "\n")
        d = DaemonProc(home, home.parent / f"daemon-{len(started)}.log", env)
        started.append(d)
        return d.ready() if wait else d

    yield start
    for d in started:
        d.kill()


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real tiny Wan 2.2 I2V model and four real mp4 clips with captions (built once, offline)."""
    from wanlora.engine.data.synthetic import write_clips
    from wanlora.engine.model.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("daemon-assets")
    clips = root / "clips"
    write_clips(clips, n=4, num_frames=24, size=(64, 64), fps=16.0, captions=True, caption="[trigger] a red square")
    model = build_tiny_model(root / "tiny-wan22-i2v")
    return {"clips": clips, "model": model, "root": root}


def job_text(assets: dict[str, Path], name: str = "tiny", *, steps: int = 20, every: int = 5, **overrides: Any) -> str:
    """A complete, valid job file for the tiny model (what the wizard would write)."""
    from wanlora.engine.config.io import dump_job, job_from_dict
    from wanlora.engine.train.demo import demo_job_dict

    d = demo_job_dict(assets["clips"], assets["model"], steps=steps, name=name, num_frames=9, resolution=64)
    d["job"]["trigger_word"] = "sks"
    d["save"]["every"] = every
    for dotted, value in overrides.items():
        section, _, key = dotted.partition("__")
        d.setdefault(section, {})[key] = value
    return dump_job(job_from_dict(d))


def cli(*args: str, home: Path, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run the real ``wanlora`` command line in a subprocess."""
    env = {**os.environ, "WANLORA_HOME": str(home), "PYTHONPATH": str(REPO), **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "wanlora.tui.cli", *args], capture_output=True, text=True,
                          env=env, cwd=kw.pop("cwd", REPO), timeout=timeout, **kw)


def other_user(name: str = "wanlora_peer") -> tuple[int, int]:
    """(uid, gid) of a second local user, created once (tests of what another user may not do; needs root)."""
    import pwd

    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create a second user")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True,
                       capture_output=True)
        pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid
