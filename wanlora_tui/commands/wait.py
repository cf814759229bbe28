"""``wanlora wait [JOB ...]``: block until jobs finish (pueue's ``wait``), printing each change of state.

Without JOB: every job that is queued or running now.  Done means completed, failed or cancelled — or
paused or held in the queue, which only ``wanlora resume`` would end.  Exit 0 when every job completed, 1
otherwise (so ``wanlora wait 3 && wanlora sample …`` works in scripts).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from wanlora.tui.commands._daemon_common import add_home, home_of

HELP = "wait until jobs finish (default: all queued and running ones); exit 1 unless all completed"
SETTLED = ("completed", "failed", "cancelled", "paused", "held")
POLL_S = 1.0


def add_arguments(parser: argparse.ArgumentParser, verb: str = "wait") -> None:
    parser.add_argument("jobs", nargs="*", metavar="JOB", help="job id(s) or name(s); default: all active jobs")
    parser.add_argument("--timeout", type=float, default=None, metavar="S", help="give up after S seconds (exit 124)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing, only the exit code")
    add_home(parser)


def _jobs(home: Any) -> list[dict[str, Any]]:
    from wanlora.daemon import client
    from wanlora.tui.commands.status import _offline

    try:
        return list(client.request(home, "list").get("jobs") or [])
    except client.DaemonDown:
        return list(_offline(home, None).get("jobs") or [])


def _select(jobs: list[dict[str, Any]], refs: list[str]) -> tuple[list[int], str]:
    from wanlora.tui.commands.status import ambiguous_message

    if not refs:
        return [j["id"] for j in jobs if j["state"] in ("queued", "running")], ""
    ids: list[int] = []
    for ref in refs:
        hit = [j for j in jobs if str(j["id"]) == ref] or [j for j in jobs if j["name"] == ref]
        if not hit:
            return [], f"no job {ref!r}; `wanlora status` lists the jobs"
        if len(hit) > 1:
            return [], ambiguous_message(ref, [(j["id"], j["state"]) for j in hit])
        ids.append(hit[0]["id"])
    return ids, ""


def run(args: argparse.Namespace) -> int:
    home = home_of(args)
    ids, why = _select(_jobs(home), [str(j) for j in args.jobs])
    if why:
        print(f"wanlora wait: {why}", file=sys.stderr)
        return 1
    if not ids:
        if not args.quiet:
            print("nothing to wait for: no job is queued or running")
        return 0
    say = (lambda _m: None) if args.quiet else (lambda m: print(m, flush=True))
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    seen: dict[int, str] = {}
    while True:
        by_id = {j["id"]: j for j in _jobs(home)}
        for i in ids:
            j = by_id.get(i)
            state = ("held" if j["state"] == "queued" and j.get("held") else j["state"]) if j else "removed"
            if seen.get(i) != state:
                step = f" at step {j.get('step', 0)}/{j.get('total_steps', 0)}" if j and j.get("total_steps") else ""
                reason = f" ({j['reason']})" if j and j.get("reason") and j["reason"] != state else ""
                say(f"job {i} {j['name'] if j else ''}: {state}{reason}{step}".replace("  ", " "))
                seen[i] = state
        if all(seen[i] in SETTLED + ("removed",) for i in ids):
            return 0 if all(seen[i] == "completed" for i in ids) else 1
        if deadline is not None and time.monotonic() > deadline:
            say(f"wanlora wait: gave up after {args.timeout:g} s")
            return 124
        time.sleep(POLL_S)
