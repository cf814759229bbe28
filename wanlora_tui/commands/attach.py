"""``wanlora attach [JOB]``: the live dashboard of one job (reattach after an SSH drop).

Without JOB: the running job (the newest, when several run), else the newest job.  A JOB that does not
exist, or a name that several jobs share, is an error with a message (exit 1) — never an empty screen.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wanlora.tui.commands._daemon_common import add_home

HELP = "the live view of one job (default: the running job, else the newest)"
ACTIVE = ("running", "starting", "loading")


def add_arguments(parser: argparse.ArgumentParser, verb: str = "") -> None:
    parser.add_argument("job", nargs="?", help="job id or name (see `wanlora status`); default: the running job, "
                                               "else the newest")
    add_home(parser)


def pick(home: Path, ref: str | None, daemon_rows: list[dict] | None = None) -> tuple[str | None, str]:
    """(job id, "") or (None, the message saying why not); (None, "") = no jobs at all."""
    from wanlora.tui.commands.status import ambiguous_message
    from wanlora.tui.job_model import list_jobs
    from wanlora.tui.spooled import find_spooled

    jobs = [j for j in list_jobs(home, daemon_rows) if j.dir is not None]
    if ref is None:
        running = [j for j in jobs if j.state in ACTIVE]
        chosen = (running or jobs)[-1:] if jobs else []
        return (chosen[0].id, "") if chosen else (None, "")
    ref = str(ref).strip()
    by_id = [j for j in jobs if j.id == ref]
    named = by_id or [j for j in jobs if j.name == ref]
    if len(named) == 1:
        return named[0].id, ""
    if len(named) > 1:
        return None, ambiguous_message(ref, [(j.id, j.state) for j in named])
    spooled = find_spooled(home, ref)
    if spooled:
        return None, (f"job {ref!r} is submitted but waiting for the daemon (spool id {spooled[0].spool_id}); "
                      "start it with `wanlora daemon start`, then attach to the id it gets (`wanlora status`)")
    return None, f"no job {ref!r} in {home / 'jobs'}; `wanlora status` lists the jobs"


def run(args: argparse.Namespace) -> int:
    from wanlora.daemon.home import Home
    from wanlora.tui import daemon_link
    from wanlora.tui.commands.home import ssh_friendly_env

    home = Home.resolve(getattr(args, "home", None)).root
    job_id, why = pick(home, args.job, daemon_link.daemon_jobs(home))
    if why:
        print(f"wanlora attach: {why}", file=sys.stderr)
        return 1
    ssh_friendly_env()
    from wanlora.tui.app import WanloraApp

    return int(WanloraApp(home=home, start="attach", job_id=job_id).run() or 0)
