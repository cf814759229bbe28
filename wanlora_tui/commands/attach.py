"""``wanlora attach [JOB]``: the live dashboard of one job (reattach after an SSH drop)."""

from __future__ import annotations

import argparse

HELP = "the live view of one job (default: the most recent active job)"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "") -> None:
    parser.add_argument("job", nargs="?", help="job id (see `wanlora status`); default: the latest active job")


def run(args: argparse.Namespace) -> int:
    from wanlora.tui.commands.home import ssh_friendly_env

    ssh_friendly_env()
    from wanlora.tui.app import WanloraApp

    return int(WanloraApp(start="attach", job_id=args.job).run() or 0)
