"""``wanlora cancel|pause|resume|retry|remove|save-now|sample-now|priority JOB``: steer jobs via the daemon."""

from __future__ import annotations

import argparse
import sys

from wanlora.daemon.home import Home
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
WITHDRAWS = ("cancel", "remove")  # with the daemon down, these take a spooled job back out of the spool


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
        # retry: the daemon first checks the job file (and its dataset) as intake does, within intake_timeout_s
        wait = client.SUBMIT_TIMEOUT_S if verb == "retry" else 30.0
        try:
            reply = client.request(home, verb, job=str(job), timeout=wait, **extra)
        except client.DaemonDown as e:
            if verb in WITHDRAWS and not e.sent:
                rc = max(rc, _withdraw_spooled(home, verb, str(job), e))
                continue
            print(f"wanlora {verb}: {e}", file=sys.stderr)
            return 1
        except client.DaemonError as e:
            print(f"wanlora {verb}: {e}", file=sys.stderr)
            rc = 1
            continue
        print(reply.get("message") or f"{verb}: done")
    return rc


def _withdraw_spooled(home: Home, verb: str, ref: str, down: Exception) -> int:
    """The daemon is down: a job submitted meanwhile is still a spool file, and cancelling or removing it means
    taking that file back before a daemon queues it (under the daemon's own lock: see ``spool.withdraw``)."""
    from wanlora.daemon.home import AlreadyRunning
    from wanlora.daemon.spool import withdraw
    from wanlora.tui.spooled import find_spooled

    found = find_spooled(home.root, ref)
    if not found:
        print(f"wanlora {verb}: {down}", file=sys.stderr)
        return 1
    if len(found) > 1:
        ids = ", ".join(s.spool_id for s in found)
        print(f"wanlora {verb}: {ref!r} names {len(found)} spooled jobs ({ids}); give the spool id "
              "(`wanlora status` lists them)", file=sys.stderr)
        return 1
    (job,) = found
    try:
        taken = withdraw(home, [job.path])
    except AlreadyRunning:
        print(f"wanlora {verb}: a daemon is starting on {home.root}, so spooled job {job.spool_id} is being taken "
              f"in now; run `wanlora {verb}` again in a moment (it will have a job id)", file=sys.stderr)
        return 1
    if not taken:
        print(f"wanlora {verb}: spooled job {job.spool_id} was taken in by a daemon just now; run "
              f"`wanlora status` for its job id", file=sys.stderr)
        return 1
    print(f"withdrew spooled job {job.name} (spool id {job.spool_id}): the daemon is down, so it had not been "
          "queued; it will not run")
    return 0
