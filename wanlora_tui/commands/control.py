"""``wanlora cancel|pause|resume|retry|remove|save-now|sample-now|priority JOB``: steer jobs via the daemon."""

from __future__ import annotations

import argparse
import sys

from wanlora.tui.commands._daemon_common import add_home, home_of

VERB_HELP = {
    "cancel": "stop a job (SIGTERM: it saves and stops at the next step; SIGKILL after a grace period)",
    "pause": "pause a running job (it saves a checkpoint, exits and frees the GPU) or hold a queued one",
    "resume": "queue a paused job again (it continues from its checkpoint) or release a held one",
    "retry": "queue a failed or cancelled job again (it resumes from its newest saved state)",
    "remove": "remove a finished/queued job from the queue (its folder and LoRAs are kept)",
    "save-now": "ask a running job to save a checkpoint pair at its next step",
    "sample-now": "ask a running job to render previews at its next step",
    "priority": "set a job's queue priority (higher starts first; `top` = above all others)",
}
HELP = "control a job"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "cancel") -> None:
    if verb == "priority":
        parser.add_argument("job", help="job id or name")
        parser.add_argument("value", help="an integer (higher starts first) or `top`")
    else:
        parser.add_argument("jobs", nargs="+", metavar="JOB", help="job id(s) or name(s)")
    add_home(parser)


def run(args: argparse.Namespace) -> int:
    from wanlora.daemon import client

    home = home_of(args)
    verb = args.verb
    targets = [args.job] if verb == "priority" else list(args.jobs)
    rc = 0
    for job in targets:
        extra = {"priority": args.value} if verb == "priority" else {}
        try:
            reply = client.request(home, verb, job=str(job), **extra)
        except client.DaemonDown as e:
            print(f"wanlora {verb}: {e}", file=sys.stderr)
            return 1
        except client.DaemonError as e:
            print(f"wanlora {verb}: {e}", file=sys.stderr)
            rc = 1
            continue
        print(reply.get("message") or f"{verb}: done")
    return rc
