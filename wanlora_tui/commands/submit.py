"""``wanlora submit JOB.toml``: validate (the same checks as ``wanlora validate``), then queue it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wanlora.tui.commands._daemon_common import add_home, home_of

HELP = "validate a job file, then queue it (prints `Submitted job <id>`, Slurm-style)"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "submit") -> None:
    parser.add_argument("job", metavar="JOB.toml", type=Path, help="the job file")
    parser.add_argument("--parsable", action="store_true", help="print only the job id")
    parser.add_argument("--priority", type=int, default=None, help="queue priority (higher starts first)")
    add_home(parser)


def run(args: argparse.Namespace) -> int:
    from wanlora.daemon import client
    from wanlora.engine.checks.validate import check_file
    from wanlora.tui.commands.validate import format_findings

    path: Path = args.job
    if not path.is_file():
        print(f"wanlora submit: {path}: no such file", file=sys.stderr)
        return 2
    home = home_of(args)
    from wanlora.engine.config.paths import configured_output_roots

    _resolved, findings = check_file(path, output_roots=[home.root, *configured_output_roots(home.root)])
    errors = [f for f in findings if f.level == "error"]
    if findings:
        print(format_findings(findings), file=sys.stderr)
    if errors:
        print(f"{path}: not submitted: {len(errors)} error(s); fix them (`wanlora validate {path}`)", file=sys.stderr)
        return 1
    try:
        done = client.submit(home, path.read_text(encoding="utf-8"), path.name)
    except client.DaemonError as e:
        print(f"{path}: the daemon refused it: {e}", file=sys.stderr)
        return 1
    except client.NotSpooled as e:
        print(f"{path}: not submitted: {e}", file=sys.stderr)
        return 1
    if done.job_id is None:
        from wanlora.tui.spooled import spool_id

        why = done.note or client.DOWN_MESSAGE
        sid = spool_id(done.spooled) if done.spooled else done.submission_id
        _say(f"{why}. The job is spooled as {done.spooled} and is queued when the daemon starts "
             f"(`wanlora status` shows it as submitted, spool id {sid}).")
        if args.parsable:
            print(sid)
        return 0
    if done.note:
        print(f"{done.note} (submission {done.submission_id}).", file=sys.stderr)
    job_id = done.job_id
    _warn_same_name(home, {"id": done.job_id, "name": done.name})
    if args.priority is not None:
        try:
            client.request(home, "priority", job=str(job_id), priority=args.priority)
        except client.DaemonError as e:
            print(f"job {job_id}: priority not set: {e}", file=sys.stderr)
    print(job_id if args.parsable else f"Submitted job {job_id}")
    return 0


def _warn_same_name(home: object, reply: dict) -> None:
    """Names need not be unique, but then only the id picks one job: say so at once."""
    from wanlora.daemon import client

    try:
        jobs = client.request(home, "list").get("jobs") or []
    except (client.DaemonDown, client.DaemonError):
        return
    same = [j for j in jobs if j.get("name") == reply.get("name") and j.get("id") != reply.get("id")]
    if same:
        listed = ", ".join(f"{j['id']} ({j['state']})" for j in same)
        _say(f"note: job {reply['id']} has the same name as job(s) {listed}; refer to it by its id "
             f"({reply['id']}), a name would be ambiguous")


def _say(text: str) -> None:
    """A message on stderr, wrapped at the terminal's width on word boundaries."""
    from wanlora.tui.term import terminal_width, wrap

    print("\n".join(wrap(text, terminal_width(), subsequent_indent="  ")), file=sys.stderr)
