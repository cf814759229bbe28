"""End to end in a real terminal: submit through the wizard, drop the "SSH session", reattach.

tmux is the terminal.  A daemon trains the tiny model on CPU; ``wanlora new --from`` (a saved job file with
the tiny model's CPU settings) runs in a tmux session at 80×24 and the test drives it with send-keys: types
the job name, walks every step, submits.  Then the tmux session is killed (what an SSH drop does to it),
the TUI must exit, the job must keep training, and a new session running ``wanlora attach`` must show the
step advancing and the loss history from before the drop.

tmux missing is a failure with the install command, not a skip (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wanlora.engine.config import jobdir

pytestmark = pytest.mark.slow

TMUX_HELP = "tmux is required for the terminal end-to-end test: apt-get install -y tmux (or brew install tmux)"


class Tmux:
    """A private tmux server (own socket) so the test never touches the user's sessions."""

    def __init__(self, socket: str, env: dict[str, str]) -> None:
        self.socket, self.env = socket, env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, *args], env=self.env, capture_output=True, text=True,
                              check=check, timeout=20)

    def new(self, name: str, command: str) -> None:
        self.run("new-session", "-d", "-s", name, "-x", "80", "-y", "24", command)

    def keys(self, name: str, *keys: str) -> None:
        self.run("send-keys", "-t", name, *keys)

    def text(self, name: str) -> str:
        return self.run("capture-pane", "-p", "-t", name).stdout

    def pane_pid(self, name: str) -> int:
        return int(self.run("display-message", "-p", "-t", name, "#{pane_pid}").stdout.strip())

    def wait_for(self, name: str, pattern: str, timeout: float = 60.0) -> str:
        deadline = time.time() + timeout
        text = ""
        while time.time() < deadline:
            text = self.text(name)
            if re.search(pattern, text):
                return text
            time.sleep(0.3)
        raise AssertionError(f"{pattern!r} never appeared in the terminal; it shows:\n{text}")

    def kill_server(self) -> None:
        self.run("kill-server", check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wanlora(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanlora.tui.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_submit_drop_and_reattach_in_tmux(tmp_path: Path) -> None:
    assert shutil.which("tmux"), TMUX_HELP
    from wanlora.engine.config.io import job_from_dict, save_job
    from wanlora.engine.data.synthetic import write_clips
    from wanlora.engine.model.tiny import build_tiny_model
    from wanlora.engine.train.demo import demo_job_dict

    home = tmp_path / "home"
    home.mkdir()
    clips = write_clips(tmp_path / "clips", n=3, num_frames=24, size=(64, 64),
                        caption="a red square moving right")[0].parent
    model = build_tiny_model(tmp_path / "tiny-wan22-i2v")
    base = demo_job_dict(clips, model, steps=400, name="from_file")
    base["job"]["vram_tier"] = 141  # a tier without quantisation: the CPU trains the tiny model in bf16
    base["save"] = {"every": 5, "max_keep": 2}
    base["model"].update(low_vram=False, layer_offloading=False)
    saved = tmp_path / "saved.toml"
    save_job(job_from_dict(base), saved)

    env = {**os.environ, "WANLORA_HOME": str(home), "TERM": "xterm-256color", "TEXTUAL_ANIMATIONS": "none",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("COLORTERM", None)  # as over SSH: 256 colours
    started = _wanlora(env, "daemon", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    tmux = Tmux(f"wanlora-e2e-{os.getpid()}", env)
    wl = f"{sys.executable} -m wanlora.tui.cli"
    try:
        # ---- submit through the wizard ------------------------------------------------------------
        tmux.new("ssh1", f"{wl} new --from {saved}")
        tmux.wait_for("ssh1", r"2/14 GPU")
        tmux.keys("ssh1", "C-n")
        tmux.wait_for("ssh1", r"3/14 JOB")
        tmux.keys("ssh1", "End")  # an escape sequence: give the parser a moment before the next keys
        time.sleep(0.5)
        tmux.keys("ssh1", "C-u")
        tmux.keys("ssh1", "-l", "tmux_orbit")  # the job name, typed
        tmux.wait_for("ssh1", r"name\s+tmux_orbit\s+user")
        time.sleep(0.6)
        for n in range(4, 15):
            tmux.keys("ssh1", "C-n")
            tmux.wait_for("ssh1", rf"{n}/14 ")
        screen = tmux.wait_for("ssh1", r"no errors")
        assert "tmux_orbit" in screen or "Submit" in screen
        tmux.keys("ssh1", "C-n")  # submit; the daemon is running, so no question
        tmux.wait_for("ssh1", r"wanlora · jobs", timeout=30)
        screen = tmux.wait_for("ssh1", r"tmux_orbit\s+running", timeout=240)
        job_dir = next(p for p in (home / "jobs").iterdir() if p.is_dir())
        job_id = job_dir.name

        def step_now() -> int:
            return int((jobdir.read_status(job_dir) or {}).get("step") or 0)

        deadline = time.time() + 240
        while step_now() < 6 and time.time() < deadline:
            time.sleep(0.5)
        assert step_now() >= 6, f"the job did not train: {jobdir.read_status(job_dir)}"

        # ---- the SSH session drops --------------------------------------------------------------------
        tui_pid = tmux.pane_pid("ssh1")
        before = step_now()
        tmux.run("kill-session", "-t", "ssh1")
        deadline = time.time() + 10
        while _alive(tui_pid) and time.time() < deadline:
            time.sleep(0.2)
        assert not _alive(tui_pid), "the orphaned TUI is still running after its terminal went away"
        deadline = time.time() + 120
        while step_now() <= before + 1 and time.time() < deadline:
            time.sleep(0.5)
        assert step_now() > before + 1, "training stopped when the terminal went away"

        # ---- reattach from a new session -------------------------------------------------------------
        tmux.new("ssh2", f"{wl} attach {job_id}")
        first = tmux.wait_for("ssh2", r"(\d+)/400 · ETA", timeout=30)
        s1 = int(re.search(r"(\d+)/400 · ETA", first).group(1))
        # the curve's x axis starts at step 1: the history from before the drop is all there
        assert re.search(r"step 1\s+\d+\s*$", first, re.M), f"no loss history from step 1:\n{first}"
        assert s1 >= before
        assert re.search(r"[\u2801-\u28ff]", first), f"no loss curve drawn:\n{first}"
        assert "tmux_orbit" in first and "RUNNING" in first
        deadline = time.time() + 120
        s2 = s1
        while s2 <= s1 and time.time() < deadline:
            time.sleep(1.0)
            m = re.search(r"(\d+)/400 · ETA", tmux.text("ssh2"))
            s2 = int(m.group(1)) if m else s2
        assert s2 > s1, f"the reattached view did not advance past step {s1}"
        print(f"reattached at step {s1}, then saw step {s2}; the screen after reattach:\n{first}")
    finally:
        tmux.kill_server()
        _wanlora(env, "cancel", job_id if "job_id" in locals() else "0")
        _wanlora(env, "daemon", "stop")
