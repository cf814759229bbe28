"""The TUI's side of the daemon: submit to the spool, ask the socket, start the daemon.

Every call answers quickly and never raises for "the daemon is down": the dashboard then works from the
job folders alone, control keys say how to start the daemon, and submitting still drops the job into the
spool (the daemon picks it up whenever it starts).  Called from worker threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPOOL = "spool"


def submit(home: Path, text: str, name: str | None = None) -> str:
    """Maildir-drop the job TOML into ``<home>/spool``; returns where it went (shown to the user)."""
    from daemon.spool import submit_file

    return str(submit_file(home, text, name=name))


def spooled(home: Path) -> list[str]:
    """Job files waiting in the spool (not yet claimed by a daemon)."""
    out: list[str] = []
    for d in (Path(home) / SPOOL / "new", Path(home) / SPOOL):
        try:
            out.extend(sorted(p.name for p in d.iterdir() if p.suffix == ".toml" and p.is_file()))
        except OSError:
            pass
    return out


def daemon_running(home: Path) -> bool:
    from daemon import client

    try:
        client.request(home, "ping")
    except client.DaemonDown:
        return False
    return True


def daemon_jobs(home: Path) -> list[dict[str, Any]] | None:
    """The daemon's job list, or None when it is not running (the caller falls back to the folders)."""
    from daemon import client

    try:
        res = client.request(home, "list")
    except client.DaemonDown:
        return None
    except Exception:
        return None
    jobs = res.get("jobs") if isinstance(res, dict) else res
    return list(jobs or [])


def job_row(home: Path, job_id: str) -> dict[str, Any] | None:
    rows = daemon_jobs(home)
    if rows is None:
        return None
    for r in rows:
        if str(r.get("id")) == str(job_id):
            return r
    return None


def control(home: Path, verb: str, job_id: str) -> tuple[bool, str]:
    """pause / resume / cancel / save-now through the socket; (ok, message for the user)."""
    from daemon import client

    try:
        res = client.request(home, verb, job=job_id)
    except client.DaemonDown:
        return False, "The daemon is not running: start it with `wanlora daemon start`, then try again."
    except Exception as e:
        return False, f"{verb} {job_id}: {e}"
    msg = res.get("message") if isinstance(res, dict) else None
    return True, str(msg or f"{verb}: sent to job {job_id}")


def start_daemon(home: Path) -> tuple[bool, str]:
    """``wanlora daemon start`` (detached, survives logout); (ok, message)."""
    import subprocess
    import sys

    try:
        proc = subprocess.run([sys.executable, "-m", "wanlora_tui.cli", "daemon", "start"],
                              capture_output=True, text=True, timeout=30,
                              env={**__import__("os").environ, "WANLORA_HOME": str(home)})
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"Could not start the daemon: {e}"
    out = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode != 0:
        return False, "Could not start the daemon: " + (out[-1] if out else f"exit {proc.returncode}")
    return True, out[-1] if out else "daemon started"
