"""``wanlora logs JOB [-f] [--events]``: the trainer's log (or its events), followed like ``tail -f``.

Reads the job folder directly (files are the real reattach channel), so it works whether or not the
daemon runs; ``-f`` stops when the job is no longer queued or running.
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
    parser.add_argument("--events", action="store_true", help="show the trainer's events (steps, checkpoints) instead")
    add_home(parser)


def _find(home: Any, ref: str) -> tuple[int, Path] | None:
    if ref.isdigit():
        d = home.job_dir(int(ref))
        return (int(ref), d) if d.is_dir() else None
    from wanlora.daemon.queue import Queue

    if not home.db.exists():
        return None
    q = Queue(home.db, readonly=True)
    try:
        rows = [r for r in q.all() if r.name == ref]
    finally:
        q.close()
    return (rows[-1].id, home.job_dir(rows[-1].id)) if rows else None


def _active(home: Any, job_id: int, job_dir: Path) -> bool:
    """Still worth following: the trainer holds its lock, or the queue says queued/running."""
    from wanlora.daemon import adopt
    from wanlora.daemon.queue import QUEUED, RUNNING, Queue

    if adopt.lock_held(job_dir):
        return True
    try:
        q = Queue(home.db, readonly=True)
        try:
            row = q.get(job_id)
        finally:
            q.close()
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


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.config import jobdir

    home = home_of(args)
    found = _find(home, str(args.job))
    if found is None:
        print(f"wanlora logs: no job {args.job!r} under {home.jobs}", file=sys.stderr)
        return 1
    job_id, job_dir = found
    out = sys.stdout
    if args.events:
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
    log = job_dir / jobdir.TRAIN_LOG
    lines, offset = _tail_lines(log, args.lines)
    for ln in lines:
        print(ln, file=out)
    out.flush()
    if not args.follow:
        return 0
    while True:
        active = _active(home, job_id, job_dir)
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        end = chunk.rfind(b"\n") + 1
        if end:
            text = chunk[:end].decode("utf-8", errors="replace").replace("\r", "\n")
            for ln in text.splitlines():
                if ln.strip():
                    print(ln, file=out, flush=True)
            offset += end
        if not active:
            return 0
        time.sleep(POLL_S)
