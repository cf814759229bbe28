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
    """Maildir-drop the job TOML into ``<home>/spool``; returns where it went (shown to the user).

    A spool that cannot be written (a full disk) raises ``NotSpooled`` naming the folder and its free space."""
    from wanlora.daemon.client import NotSpooled
    from wanlora.daemon.diskspace import describe_free
    from wanlora.daemon.spool import submit_file

    try:
        return str(submit_file(home, text, name=name))
    except OSError as e:
        spool = Path(home) / SPOOL
        raise NotSpooled(f"the job could not be written into {spool} ({e.strerror or e}; {describe_free(spool)}); "
                         "free space there and submit again") from None


def spooled(home: Path) -> list[Any]:
    """Jobs waiting in the spool (not yet taken in by a daemon): :class:`wanlora.tui.spooled.Spooled` rows."""
    from wanlora.tui.spooled import spooled_jobs

    return spooled_jobs(Path(home))


def queued_ids(home: Path) -> set[str] | None:
    """Ids in ``queue.db`` read directly (daemon down), or None without a queue: folders of removed jobs stay hidden."""
    from wanlora.daemon.home import Home

    db = Home.resolve(home).db
    if not db.exists():
        return None
    try:
        from wanlora.daemon.queue import Queue

        with Queue(db, readonly=True) as q:
            return {str(r.id) for r in q.all()}
    except Exception:  # a locked or foreign database: show every folder rather than nothing
        return None


TIMEOUT_S = 5.0  # a dashboard poll must never hang on a wedged daemon


def daemon_running(home: Path) -> bool:
    from wanlora.daemon import client

    return client.running(home)


def _ask(home: Path, cmd: str, **args: Any) -> dict[str, Any] | None:
    """One request; None when no daemon answers (or it answers garbage: the files still work)."""
    from wanlora.daemon import client, protocol

    try:
        return client.request(home, cmd, timeout=TIMEOUT_S, **args)
    except (client.DaemonDown, client.DaemonError, protocol.ProtocolError, OSError):
        return None


def daemon_jobs(home: Path) -> list[dict[str, Any]] | None:
    """The daemon's job list, or None when it is not running (the caller falls back to the folders)."""
    res = _ask(home, "list")
    if res is None:
        return None
    jobs = res.get("jobs")
    return [j for j in jobs if isinstance(j, dict)] if isinstance(jobs, list) else []


def job_status(home: Path, job_id: str) -> dict[str, Any] | None:
    """The daemon's row for one job plus machine telemetry (``gpus``), or None when it is down."""
    res = _ask(home, "status", job=str(job_id))
    if res is None:
        return None
    row = res.get("job") if isinstance(res.get("job"), dict) else {}
    tele = row.get("telemetry") if isinstance(row.get("telemetry"), dict) else {}
    gpus = tele.get("gpus")  # NVML readings of the job's own GPUs
    return {**row, "gpus": gpus if isinstance(gpus, list) and gpus else None}


def control(home: Path, verb: str, job_id: str) -> tuple[bool, str]:
    """pause / resume / cancel / save-now through the socket; (ok, message for the user)."""
    from wanlora.daemon import client, protocol

    try:
        res = client.request(home, verb, job=str(job_id), timeout=TIMEOUT_S * 2)
    except client.DaemonDown:
        return False, "The daemon is not running: start it with `wanlora daemon start`, then try again."
    except (client.DaemonError, protocol.ProtocolError, OSError) as e:
        return False, f"{verb} {job_id}: {e}"
    msg = res.get("message")
    return True, str(msg or f"{verb}: sent to job {job_id}")


def start_daemon(home: Path) -> tuple[bool, str]:
    """``wanlora daemon start`` (detached, survives logout); (ok, message)."""
    import subprocess
    import sys

    try:
        proc = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "daemon", "start"],
                              capture_output=True, text=True, timeout=30,
                              env={**__import__("os").environ, "WANLORA_HOME": str(home)})
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"Could not start the daemon: {e}"
    out = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode != 0:
        return False, "Could not start the daemon: " + (out[-1] if out else f"exit {proc.returncode}")
    return True, out[-1] if out else "daemon started"
