"""``wanlora logs JOB [-f] [--events] [--raw]``: the trainer's log with its progress, followed like ``tail -f``.

Reads the job folder directly (files are the real reattach channel), so it works whether or not the
daemon runs; ``-f`` stops when the job is no longer queued or running.  Between the log's lines come the
trainer's step lines (step, loss, s/step, ETA), checkpoints and errors from ``events.jsonl``; library noise
(tqdm load bars, a torchvision note) is left out unless ``--raw``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from wanlora.tui.commands._daemon_common import add_home, duration, home_of

HELP = "print a job's train.log (or --events), `-f` to follow it"
POLL_S = 0.3


def add_arguments(parser: argparse.ArgumentParser, verb: str = "logs") -> None:
    parser.add_argument("job", help="job id (or name)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the job stops")
    parser.add_argument("-n", "--lines", type=int, default=50, help="how many lines of the end to show first (0 = all)")
    parser.add_argument("--events", action="store_true", help="show the trainer's raw events (JSON) instead")
    parser.add_argument("--raw", action="store_true", help="the log exactly as written: no step lines, no filtering")
    add_home(parser)


def _find(home: Any, ref: str) -> tuple[int, Path] | None:
    if ref.isdigit():
        d = home.job_dir(int(ref))
        return (int(ref), d) if d.is_dir() else None
    from wanlora.daemon.queue import Queue

    if not home.db.exists():
        return None
    with Queue(home.db, readonly=True) as q:
        rows = [r for r in q.all() if r.name == ref]
    if len(rows) > 1:
        from wanlora.tui.commands.status import Ambiguous, ambiguous_message

        raise Ambiguous(ambiguous_message(ref, [(r.id, r.state) for r in rows]))
    return (rows[-1].id, home.job_dir(rows[-1].id)) if rows else None


def _active(home: Any, job_id: int, job_dir: Path) -> bool:
    """Still worth following: the trainer holds its lock, or the queue says queued/running."""
    from wanlora.daemon import adopt
    from wanlora.daemon.queue import QUEUED, RUNNING, Queue

    if adopt.lock_held(job_dir):
        return True
    try:
        with Queue(home.db, readonly=True) as q:
            row = q.get(job_id)
    except Exception:
        return False
    return row is not None and row.state in (QUEUED, RUNNING)


def format_event(ev: dict[str, Any]) -> str:
    t = time.strftime("%H:%M:%S", time.localtime(ev.get("ts", 0)))
    typ = ev.get("type")
    if typ == "step":
        loss = ev.get("loss")
        loss_s = f"{loss:.4f}" if isinstance(loss, int | float) else "nan"
        return (f"{t} step {ev.get('step')}/{ev.get('total_steps')}  loss {loss_s}  {ev.get('expert', '')}  "
                f"t={ev.get('timestep', '')}  {ev.get('s_per_step', '')} s/step  eta {duration(ev.get('eta_s'))}")
    rest = {k: v for k, v in ev.items() if k not in ("v", "seq", "ts", "type")}
    return f"{t} {typ} " + json.dumps(rest, default=str)


def _tail_lines(path: Path, n: int) -> tuple[list[str], int]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    text = data[:end].decode("utf-8", errors="replace").replace("\r", "\n")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-n:] if n > 0 else lines), end


def _job_or_none(args: argparse.Namespace, home: Any) -> tuple[int, Path] | None:
    """The job ``args.job`` names; None after saying why there is none (or several)."""
    from wanlora.tui.commands.status import Ambiguous

    try:
        found = _find(home, str(args.job))
    except Ambiguous as e:
        print(f"wanlora logs: {e}", file=sys.stderr)
        return None
    if found is None:
        print(f"wanlora logs: no job {args.job!r} under {home.jobs}", file=sys.stderr)
    return found


def _show_events(args: argparse.Namespace, home: Any, job_id: int, job_dir: Path) -> int:
    """``--events``: the raw events (the last ``-n``), then new ones while the job is active with ``-f``."""
    from wanlora.engine.config import jobdir

    out = sys.stdout
    cursor = jobdir.EventCursor()
    evs = list(jobdir.read_events(job_dir, cursor))
    for ev in evs[-args.lines:] if args.lines > 0 else evs:
        print(format_event(ev), file=out)
    out.flush()
    while args.follow and _active(home, job_id, job_dir):
        time.sleep(POLL_S)
        for ev in jobdir.read_events(job_dir, cursor):
            print(format_event(ev), file=out, flush=True)
    for ev in jobdir.read_events(job_dir, cursor) if args.follow else []:
        print(format_event(ev), file=out, flush=True)
    return 0


def _show_log_tail(args: argparse.Namespace, log: Path, job_dir: Path, cursor: Any) -> int:
    """The end of train.log (noise left out unless ``--raw``), then the latest files/problems and where the run
    is now; reads the events up to now into ``cursor``.  Returns the log offset to follow from."""
    from wanlora.engine.config import jobdir
    from wanlora.tui.progress import event_line, is_noise

    out = sys.stdout
    lines, offset = _tail_lines(log, 0 if not args.raw else args.lines)
    if not args.raw:
        lines = [ln for ln in lines if not is_noise(ln)]
        lines = lines[-args.lines:] if args.lines > 0 else lines
    for ln in lines:
        print(ln, file=out)
    last_step, recent = None, []
    for ev in jobdir.read_events(job_dir, cursor):
        if ev.get("type") == "step":
            last_step = ev
        elif ev.get("type") in ("checkpoint", "sample", "warning", "error"):
            recent = [*recent[-4:], ev]
    if not args.raw:
        for ev in recent:  # the latest files and problems, then where the run is now
            print(event_line(ev), file=out)
        if last_step is not None:
            print(event_line(last_step), file=out)
    out.flush()
    return offset


def _new_log_lines(log: Path, offset: int) -> tuple[list[str], int]:
    """The whole lines written to ``log`` past ``offset``, and the offset after them."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        chunk = b""
    end = chunk.rfind(b"\n") + 1
    if not end:
        return [], offset
    text = chunk[:end].decode("utf-8", errors="replace").replace("\r", "\n")
    return text.splitlines(), offset + end


def _follow_log(args: argparse.Namespace, home: Any, job_id: int, job_dir: Path, offset: int, cursor: Any) -> int:
    """``-f``: new step lines and log lines until the job is no longer queued or running."""
    from wanlora.engine.config import jobdir
    from wanlora.tui.progress import event_line, is_noise

    out = sys.stdout
    log = job_dir / jobdir.TRAIN_LOG
    while True:
        active = _active(home, job_id, job_dir)  # asked first: what was written before it stopped is still printed
        if not args.raw:
            for ev in jobdir.read_events(job_dir, cursor):
                line = event_line(ev)
                if line:
                    print(line, file=out, flush=True)
        lines, offset = _new_log_lines(log, offset)
        for ln in lines:
            if ln.strip() and (args.raw or not is_noise(ln)):
                print(ln, file=out, flush=True)
        if not active:
            return 0
        time.sleep(POLL_S)


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.config import jobdir

    home = home_of(args)
    found = _job_or_none(args, home)
    if found is None:
        return 1
    job_id, job_dir = found
    if args.events:
        return _show_events(args, home, job_id, job_dir)
    cursor = jobdir.EventCursor()
    offset = _show_log_tail(args, job_dir / jobdir.TRAIN_LOG, job_dir, cursor)
    if not args.follow:
        return 0
    return _follow_log(args, home, job_id, job_dir, offset, cursor)
