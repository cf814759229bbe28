"""``wanlora clean``: take finished jobs off the list (pueue's ``clean``); their folders and LoRAs stay.

Removes completed, failed and cancelled jobs from the queue (``--successful-only``: completed ones only),
so ``status`` and the dashboard show what is still going on.  Nothing is deleted from disk.
"""

from __future__ import annotations

import argparse
import sys

from wanlora.tui.commands._daemon_common import add_home, home_of

HELP = "remove finished jobs from the list (folders and LoRAs are kept)"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "clean") -> None:
    parser.add_argument("-s", "--successful-only", action="store_true", help="only completed jobs")
    add_home(parser)


def run(args: argparse.Namespace) -> int:
    from wanlora.daemon import client

    home = home_of(args)
    states = ("completed",) if args.successful_only else ("completed", "failed", "cancelled")
    try:
        jobs = client.request(home, "list").get("jobs") or []
    except client.DaemonDown:
        print("wanlora clean: the daemon is not running; start it with `wanlora daemon start`", file=sys.stderr)
        return 1
    done = [j for j in jobs if j.get("state") in states]
    if not done:
        print("nothing to clean: no " + ("completed" if args.successful_only else "finished") + " job in the list")
        return 0
    removed, rc = [], 0
    for j in done:
        try:
            client.request(home, "remove", job=str(j["id"]))
            removed.append(j)
        except client.DaemonError as e:
            print(f"job {j['id']}: {e}", file=sys.stderr)
            rc = 1
    if removed:
        print(f"removed {len(removed)} finished job(s) from the list: "
              + ", ".join(f"{j['id']} {j['name']} ({j['state']})" for j in removed))
        print(f"their folders (job.toml, logs, LoRAs) are kept under {home.jobs}")
    return rc
