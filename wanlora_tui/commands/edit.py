"""``wanlora edit JOB``: change a queued, held, paused or failed job (pueue's ``edit``), validated first.

Opens the job's frozen ``job.toml`` in ``$VISUAL`` / ``$EDITOR`` (else nano, else vi), or in the wizard with
``--wizard``; the result goes through the same checks as ``wanlora submit`` (locally, then again in the
daemon, which replaces the file only while the job is not running).  A rejected edit is kept in a file and
the old job is untouched.  The previous file stays beside the new one as ``job.toml.prev``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from wanlora.tui.commands._daemon_common import add_home, home_of

HELP = "edit a queued, held, paused or failed job's TOML ($EDITOR, or --wizard), validated before it replaces the old"
EDITABLE = ("queued", "paused", "failed")


def add_arguments(parser: argparse.ArgumentParser, verb: str = "edit") -> None:
    parser.add_argument("job", help="job id (or name)")
    parser.add_argument("--wizard", action="store_true", help="reopen the wizard on the job instead of a text editor")
    parser.add_argument("--file", type=Path, default=None, metavar="JOB.toml",
                        help="replace the job with this file (no editor; for scripts)")
    add_home(parser)


def editor_command() -> list[str]:
    for var in ("VISUAL", "EDITOR"):
        if os.environ.get(var, "").strip():
            return shlex.split(os.environ[var])
    for name in ("nano", "vi"):
        if shutil.which(name):
            return [name]
    return []


def _edit_in_wizard(path: Path, home: Path) -> bool:
    """The wizard on the file; True when the user saved (the review's submit writes back to ``path``)."""
    from wanlora.tui.commands.home import ssh_friendly_env

    ssh_friendly_env()
    from wanlora.tui.app import WanloraApp

    return WanloraApp(home=home, start="wizard", from_file=path, save_to=path).run() == 0


def _editable_row(client: Any, home: Any, job: str) -> dict[str, Any] | None:
    """The job's daemon row when it may be edited now; else None, with the reason on stderr."""
    try:
        row = client.request(home, "status", job=job)["job"]
    except client.DaemonDown:
        print("wanlora edit: the daemon is not running; start it with `wanlora daemon start` (edits go through it, "
              "so a job's file never changes under a starting trainer)", file=sys.stderr)
        return None
    except client.DaemonError as e:
        print(f"wanlora edit: {e}", file=sys.stderr)
        return None
    job_id, state = row["id"], row["state"]
    if state not in EDITABLE:
        hint = f" (pause it first: `wanlora pause {job_id}`)" if state == "running" else ""
        print(f"wanlora edit: job {job_id} is {state}{hint}; only a queued, held, paused or failed job can be edited",
              file=sys.stderr)
        return None
    return row


def _open_for_edit(args: argparse.Namespace, tmp: Path, home: Any) -> int | None:
    """One editing round (wizard or $EDITOR; nothing with --file); an exit code when the edit ends here."""
    if args.file is None:
        if args.wizard:
            if not _edit_in_wizard(tmp, home.root):
                print("wanlora edit: wizard closed without saving; job unchanged")
                return 0
        else:
            cmd = editor_command()
            if not cmd:
                print("wanlora edit: no editor found; set $EDITOR (e.g. `export EDITOR=nano`) or use --wizard",
                      file=sys.stderr)
                return 1
            if subprocess.call([*cmd, str(tmp)]) != 0:
                print(f"wanlora edit: the editor ({cmd[0]}) failed; job unchanged", file=sys.stderr)
                return 1
    return None


def _edit_again(args: argparse.Namespace, errors: list[Any]) -> bool:
    """At a terminal (not with --file) a rejected edit may go back to the editor."""
    if args.file is None and sys.stdin.isatty():
        answer = input(f"{len(errors)} error(s); the job is unchanged. Edit again? [Y/n] ").strip().lower()
        if answer in ("", "y", "yes"):
            return True
    return False


def run(args: argparse.Namespace) -> int:
    from wanlora.daemon import client
    from wanlora.engine.checks.validate import check_file
    from wanlora.tui.commands.validate import format_findings

    home = home_of(args)
    row = _editable_row(client, home, str(args.job))
    if row is None:
        return 1
    job_id = row["id"]
    current = Path(row["job_dir"]) / "job.toml"
    old = current.read_text(encoding="utf-8")
    fd, tmp_name = tempfile.mkstemp(prefix=f"wanlora-job{job_id}-", suffix=".toml")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.write_text(old if args.file is None else Path(args.file).read_text(encoding="utf-8"), encoding="utf-8")
    keep = False
    try:
        while True:
            code = _open_for_edit(args, tmp, home)
            if code is not None:
                return code
            new = tmp.read_text(encoding="utf-8")
            if new == old:
                print(f"job {job_id}: no change")
                return 0
            _res, findings = check_file(tmp)
            errors = [f for f in findings if f.level == "error"]
            if findings:
                print(format_findings(findings), file=sys.stderr)
            if not errors:
                break
            if _edit_again(args, errors):
                continue
            keep = True
            print(f"wanlora edit: not replaced: {len(errors)} error(s); your edit is kept in {tmp} "
                  f"(fix it, then `wanlora edit {job_id} --file {tmp}`)", file=sys.stderr)
            return 1
        try:
            # the daemon checks the file (and its dataset) as intake does, time-limited by intake_timeout_s
            reply = client.request(home, "edit", job=str(job_id), text=new, timeout=client.SUBMIT_TIMEOUT_S)
        except (client.DaemonDown, client.DaemonError) as e:
            keep = True
            print(f"wanlora edit: not replaced: {e}\nyour edit is kept in {tmp}", file=sys.stderr)
            return 1
        print(reply.get("message") or f"job {job_id} updated")
        return 0
    finally:
        if not keep:
            tmp.unlink(missing_ok=True)
