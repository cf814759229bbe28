"""``wanlora push JOB [--repo owner/name] [--public|--private]``: upload a completed job to the Hugging Face Hub.

The daemon does the upload (``daemon.hub_push``: retried with backoff, never holding the queue); this asks it to
queue one: again after a failure (e.g. once ``hf auth login`` is done), or for a job that had no
``[save] push_to_hub``, or to another repo.  ``wanlora status JOB`` shows how it goes.
"""

from __future__ import annotations

import argparse
import sys

from wanlora.tui.commands._daemon_common import add_home, home_of

HELP = "upload a completed job's final LoRA pair + a model card to the Hugging Face Hub (again, or elsewhere)"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "push") -> None:
    parser.add_argument("job", metavar="JOB", help="job id or name (a completed job)")
    parser.add_argument("--repo", metavar="OWNER/NAME", default=None,
                        help="the Hub repo; default: the job's save.push_to_hub (or the last upload's repo)")
    vis = parser.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=None,
                     help="create the repo private (the default)")
    vis.add_argument("--public", dest="private", action="store_false", help="create the repo public")
    add_home(parser)


def run(args: argparse.Namespace) -> int:
    from wanlora.daemon import client
    from wanlora.engine.config.schema import hub_repo_problem

    if args.repo and hub_repo_problem(args.repo):
        print(f"wanlora push: --repo {args.repo!r}: {hub_repo_problem(args.repo)}", file=sys.stderr)
        return 2
    extra = {k: v for k, v in (("repo", args.repo), ("private", args.private)) if v is not None}
    try:
        reply = client.request(home_of(args), "push", job=str(args.job), **extra)
    except (client.DaemonDown, client.DaemonError) as e:
        print(f"wanlora push: {e}", file=sys.stderr)
        return 1
    print(reply.get("message") or "push: queued")
    return 0
