"""Starting and stopping the daemon so that it survives the SSH session that started it.

``start`` double-forks with ``setsid`` (no controlling terminal, so a dropped SSH session's SIGHUP never
reaches it) and sends stdio to ``<home>/daemon.log``.  ``install-service`` writes a systemd user unit for
machines that have systemd; rented GPU containers usually do not, and the README tells them to run
``wanlora daemon start`` from the provider's start hook instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from wanlora.daemon import client
from wanlora.daemon.config import ConfigError, DaemonConfig
from wanlora.daemon.home import AlreadyRunning, Home, HomeError, lock_holder_pid

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
LOG_KEEP_BYTES = 10 * 1024 * 1024
UNIT_NAME = "wanlora.service"


class ServiceError(Exception):
    """Starting/stopping failed; the message says why and what to do."""


def daemon_command(home: Home) -> list[str]:
    return [sys.executable, "-m", "wanlora.daemon", "run", "--home", str(home.root)]


def _trim_log(path: Path) -> None:
    """Keep daemon.log bounded across restarts (the tail is what matters)."""
    try:
        if path.stat().st_size > LOG_KEEP_BYTES:
            with open(path, "rb") as f:
                f.seek(-LOG_KEEP_BYTES // 2, os.SEEK_END)
                tail = f.read()
            path.write_bytes(tail)
    except OSError:
        pass


def start(home: Home, *, timeout_s: float = START_TIMEOUT_S) -> tuple[int, bool]:
    """Start a detached daemon; returns (pid, started_now).  An already running one is not an error."""
    pid = lock_holder_pid(home)
    if pid:
        return pid, False
    home.ensure()
    home.check_socket_path()
    try:
        DaemonConfig.load(home.config)  # refuse an untrusted/broken config here, with its message
    except ConfigError as e:
        raise ServiceError(str(e)) from None
    _trim_log(home.log)
    first = os.fork()
    if first == 0:  # child: new session, fork again so the daemon is no session leader and not our child
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            fd_in = os.open(os.devnull, os.O_RDONLY)
            fd_log = os.open(home.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(fd_in, 0)
            os.dup2(fd_log, 1)
            os.dup2(fd_log, 2)
            os.chdir(home.root)
            os.execv(sys.executable, daemon_command(home))
        finally:
            os._exit(127)
    os.waitpid(first, 0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            info = client.request(home, "ping", timeout=2)
            return int(info["pid"]), True
        except client.DaemonDown:
            time.sleep(0.05)
        except client.DaemonError:
            time.sleep(0.05)
    raise ServiceError(f"the daemon did not come up within {timeout_s:g} s; the end of {home.log}:\n{_log_tail(home)}")


def _log_tail(home: Home, lines: int = 15) -> str:
    try:
        return "\n".join(home.log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(home: Home, *, timeout_s: float = STOP_TIMEOUT_S) -> tuple[int | None, str]:
    """Ask the daemon to stop (running jobs keep training); returns (pid or None, message)."""
    pid = lock_holder_pid(home)
    if pid is None:
        return None, f"no daemon is running for {home.root}"
    message = ""
    try:
        message = str(client.request(home, "shutdown", timeout=5).get("message", ""))
    except (client.DaemonDown, client.DaemonError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if lock_holder_pid(home) is None:
            return pid, message or f"daemon {pid} stopped"
        time.sleep(0.05)
    raise ServiceError(f"daemon {pid} did not stop within {timeout_s:g} s; `kill {pid}` stops it "
                       "(running jobs keep training either way)")


def status(home: Home) -> dict[str, Any] | None:
    """The daemon's ping reply, or None when none runs."""
    try:
        return client.request(home, "ping", timeout=5)
    except client.DaemonDown:
        return None


def unit_text(home: Home) -> str:
    """A systemd user unit.  KillMode=process: restarting the daemon must not kill training children."""
    return f"""[Unit]
Description=wanlora training daemon (Wan 2.2 I2V LoRA queue)
After=default.target

[Service]
Type=simple
Environment=WANLORA_HOME={home.root}
Environment=PYTHONUNBUFFERED=1
WorkingDirectory={home.root}
ExecStart={' '.join(daemon_command(home))}
Restart=on-failure
RestartSec=5
# Trainers run in their own sessions and are re-adopted by the next daemon: only stop the daemon itself.
KillMode=process

[Install]
WantedBy=default.target
"""


def unit_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / UNIT_NAME


def install_service(home: Home, path: Path | None = None) -> tuple[Path, list[str]]:
    """Write the unit; returns its path and the commands the user still has to run."""
    home.ensure()
    path = path or unit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit_text(home))
    user = os.environ.get("USER") or "$USER"
    default = path.resolve() == unit_path().resolve()
    # systemd finds units by name only in its own folders; a unit written elsewhere is enabled by its path
    enable = f"systemctl --user enable --now {UNIT_NAME if default else path.resolve()}"
    hints = ["systemctl --user daemon-reload", enable,
             f"loginctl enable-linger {user}   # keeps it running after you log out"]
    if not shutil.which("systemctl"):
        hints = ["(systemctl was not found: this machine has no systemd — common on rented GPU containers.",
                 " Use `wanlora daemon start` from the provider's start hook instead, e.g. RunPod/Vast onstart.sh,",
                 " with WANLORA_HOME on the persistent volume.)"] + hints
    return path, hints


def run(home: Home) -> int:
    """Foreground daemon (what ``start`` execs and what systemd runs)."""
    from wanlora.daemon.supervisor import run_foreground

    try:
        home.check_trusted()  # before reading its config.toml: a foreign home's callback is never even loaded
        config = DaemonConfig.load(home.config)
    except (ConfigError, HomeError) as e:
        print(f"wanlora daemon: {e}", file=sys.stderr)
        return 2
    try:
        return run_foreground(home, config)
    except AlreadyRunning as e:
        print(f"wanlora daemon: {e}", file=sys.stderr)
        return 3
    except HomeError as e:
        print(f"wanlora daemon: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wanlora.daemon")
    p.add_argument("action", choices=["run", "start", "stop", "status"])
    p.add_argument("--home", type=Path, default=None)
    args = p.parse_args(argv)
    home = Home.resolve(args.home)
    if args.action == "run":
        return run(home)
    if args.action == "start":
        pid, new = start(home)
        print(f"daemon {'started' if new else 'already running'} (pid {pid})")
        return 0
    if args.action == "stop":
        pid, msg = stop(home)
        print(msg)
        return 0
    info = status(home)
    print(f"daemon running (pid {info['pid']})" if info else "daemon not running")
    return 0 if info else 3


