"""``wanlora status [JOB] [--json]``: the queue (Slurm-style state + reason) or one job in detail.

Asks the daemon; when it is down, reads ``queue.db`` and the job folders directly and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from wanlora.tui.commands._daemon_common import add_home, duration, home_of, when

HELP = "show the queue, or one job in detail (`--json` for scripts)"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "status") -> None:
    parser.add_argument("job", nargs="?", default=None, help="job id (or name) for the detailed view")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_home(parser)


def _offline(home: Any, job: str | None) -> dict[str, Any]:
    """The same answer as the daemon's, built from queue.db (read-only) and the job folders."""
    from wanlora.daemon.queue import Queue
    from wanlora.daemon.views import job_view

    if not home.db.exists():
        return {"jobs": [], "job": None}
    with Queue(home.db, readonly=True) as q:
        rows = q.all()
    if job is None:
        return {"jobs": [job_view(home, r) for r in rows]}
    match = [r for r in rows if str(r.id) == job] or [r for r in rows if r.name == job]
    if len(match) > 1:
        raise Ambiguous(ambiguous_message(job, [(r.id, r.state) for r in match]))
    return {"job": job_view(home, match[-1], detail=True) if match else None}


class Ambiguous(Exception):
    """A name that several jobs share: the message lists them."""


def ambiguous_message(ref: str, matches: list[tuple[object, str]]) -> str:
    """The same words as the daemon's: which jobs share the name, and to use an id."""
    listed = ", ".join(f"{i} ({st})" for i, st in matches)
    return f"{len(matches)} jobs are named {ref!r}: {listed}; give the id instead (e.g. `{matches[-1][0]}`)"


def _step(j: dict[str, Any]) -> str:
    total = j.get("total_steps") or 0
    return f"{j.get('step', 0)}/{total}" if total else str(j.get("step", 0))


def short_spool_id(sid: str, others: list[str]) -> str:
    """The shortest ``<name>-<date>-<time>[-hex…]`` prefix of a spool id that no other spool id starts with: every
    command that takes a spool id takes a unique prefix (``spooled.find_spooled``), and the full id (60+
    characters) would not fit an 80-column table."""
    head, _, tail = sid.rpartition("-")
    if not head or len(tail) != 32:
        return sid
    for n in (0, 4, 8, 32):
        cand = head + (f"-{tail[:n]}" if n else "")
        if not any(o != sid and o.startswith(cand) for o in others):
            return cand
    return sid


def table(jobs: list[dict[str, Any]], width: int | None = None) -> str:
    """The queue, one job per line, each line at most ``width`` columns (default: the terminal's): the REASON
    column takes what is left and is shortened with "…".  A job still in the spool shows its spool id (a unique
    prefix) where the job id will be."""
    from wanlora.tui.term import ellipsize, terminal_width

    rows = [("ID", "NAME", "STATE", "STEP", "ETA", "GPU", "RST", "REASON")]
    spooled = [j["spool_id"] for j in jobs if j.get("id") is None and j.get("spool_id")]
    for j in jobs:
        state = j["state"].upper() + (" STALE" if j.get("stale") else "")
        eta = duration(j.get("eta_s")) if j["state"] == "running" else "-"
        if j.get("id") is None and j.get("spool_id"):  # submitted while the daemon is down: its spool id for now
            rows.append((short_spool_id(j["spool_id"], spooled), j["name"][:24], state, "-", "-", "-", "-",
                         f"{j['reason']} (spool id, no job id yet)"))
            continue
        rows.append((str(j["id"]), j["name"][:24], state, _step(j), eta, j.get("gpus") or "-",
                     str(j.get("restart_count", 0)), ((j.get("reason") or "") if j.get("reason") != j["state"] else "")[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    width = terminal_width() if width is None else width
    return "\n".join(ellipsize("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1],
                               width) for r in rows)


def spooled_detail(j: dict[str, Any]) -> str:
    return "\n".join([f"spool id {j['spool_id']}  {j['name']}",
                      f"  state      submitted, {j['reason']} (it gets a job id when the daemon takes it in)",
                      f"  file       {j['file']}",
                      "  next       `wanlora daemon start` (the daemon validates it, then queues it)"])


def detail(j: dict[str, Any]) -> str:
    lines = [f"job {j['id']}  {j['name']}",
             f"  state      {j['state']}" + (f" ({j['reason']})" if j.get("reason") and j["reason"] != j["state"] else "") + ("  STALE" if j.get("stale") else ""),
             f"  step       {_step(j)}" + (f"   loss {j['loss']:.4g}" if isinstance(j.get("loss"), int | float) else "")
             + (f"   expert {j['expert']}" if j.get("expert") else "")
             + (f"   ETA {duration(j.get('eta_s'))}" if j["state"] == "running" else ""),
             f"  restarts   {j.get('restart_count', 0)}   priority {j.get('priority', 0)}"
             + (f"   gpus {j['gpus']}" if j.get("gpus") else "") + (f"   pid {j['pid']}" if j.get("pid") else ""),
             f"  submitted  {when(j.get('submitted_ts'))}   started {when(j.get('started_ts'))}"
             f"   ended {when(j.get('ended_ts'))}"]
    if j.get("message"):
        lines.append(f"  message    {j['message']}")
    if j.get("last_checkpoint"):
        lines.append(f"  checkpoint {j['last_checkpoint']}")
    ev = (j.get("trainer_status") or {}).get("eval")
    if isinstance(ev, dict):  # held-out clips at the last save (engine.train.evaluate)
        losses = "   ".join(f"{k} {v:.5f}" for k, v in ev.items() if k != "step" and isinstance(v, int | float))
        lines.append(f"  eval loss  {losses}   (step {ev.get('step')}; `wanlora compare {j['id']}` to pick)")
    lines.append(f"  output     {j.get('output_dir') or '-'}")
    if isinstance(j.get("push"), dict):  # [save] push_to_hub / `wanlora push` (daemon.hub_push)
        from wanlora.daemon.hub_push import describe

        lines += [f"  {'hub' if i == 0 else '':<10} {ln}" for i, ln in enumerate(describe(j["push"]))]
    d = j.get("disk") or {}
    if "free_gb" in d:
        lines.append(f"  disk       {d['free_gb']:.1f} GiB free of {d['total_gb']:.1f} GiB")
    lines.append(f"  folder     {j.get('job_dir')}")
    lines.append(f"  log        {j.get('train_log')}   (`wanlora logs {j['id']} -f`)")
    for w in j.get("warnings") or []:
        lines.append(f"  note       {w}")
    tel = j.get("telemetry") or {}
    for g in tel.get("gpus") or []:
        lines.append(f"  gpu {g.get('index')}      {g.get('name', '')} util {g.get('util', '-')}%  "
                     f"mem {g.get('mem_used_mb', '-')}/{g.get('mem_total_mb', '-')} MiB  {g.get('temp_c', '-')}°C  "
                     f"{g.get('power_w', '-')} W")
    host = tel.get("host")
    if host:
        lines.append(f"  host       cpu {host.get('cpu_percent')}% of {host.get('cpu_count')}  "
                     f"ram {host.get('ram_used_gb')}/{host.get('ram_total_gb')} GiB")
    return "\n".join(lines)


def _show_spooled(args: argparse.Namespace, job: str, pending: list[Any]) -> int:
    """A job reference that names a spooled submission (no job id yet): its detail, or which ones share it."""
    if len(pending) > 1:
        print(f"wanlora status: {ambiguous_message(job, [(s.spool_id, 'submitted') for s in pending])}",
              file=sys.stderr)
        return 1
    j = pending[0].to_dict()
    print(json.dumps({"job": j}, indent=2) if args.json else spooled_detail(j))
    return 0


def _ask(home: Any, job: str | None) -> tuple[dict[str, Any] | None, bool]:
    """The daemon's answer and whether it is up; read from disk when it is down; ``None`` (said) on an error."""
    from wanlora.daemon import client

    try:
        return (client.request(home, "status", job=job) if job else client.request(home, "list")), True
    except client.DaemonDown:
        try:
            return _offline(home, job), False
        except Ambiguous as e:
            print(f"wanlora status: {e}", file=sys.stderr)
            return None, False
    except client.DaemonError as e:
        print(f"wanlora status: {e}", file=sys.stderr)
        return None, True


def _print_json(reply: dict[str, Any], up: bool, job: str | None) -> int:
    """``--json``: the daemon block (null when down) and the jobs/job/telemetry; 1 for an unknown job."""
    print(json.dumps({"daemon": reply.get("daemon") if up else None, **{k: v for k, v in reply.items()
                                                                        if k in ("jobs", "job", "telemetry")}},
                     indent=2, default=str))
    return 0 if (job is None or reply.get("job")) else 1


def _down_note(home: Any) -> str:
    """The note that the daemon is down and the answer comes from queue.db, wrapped to the terminal."""
    from wanlora.daemon import client
    from wanlora.tui.term import terminal_width, wrap

    return "\n".join(wrap(f"note: {client.DOWN_MESSAGE} (showing {home.db})", terminal_width(),
                          subsequent_indent="      "))


def _print_job(reply: dict[str, Any], job: str, note: str) -> int:
    """One job in detail (the down note first), or say there is no such job."""
    if note:
        print(note)
    if not reply.get("job"):
        print(f"wanlora status: no job {job!r}", file=sys.stderr)
        return 1
    print(detail(reply["job"]))
    return 0


def _print_queue(reply: dict[str, Any], up: bool, note: str) -> int:
    """The queue table (or how to start one), the down note, then each GPU's telemetry when the daemon is up."""
    jobs = reply.get("jobs") or []
    if not jobs:
        print("no jobs yet: `wanlora new` opens the wizard, `wanlora submit JOB.toml` queues a job file")
    else:
        print(table(jobs))
    if note:  # on stdout, its own line after the table: split over two streams, captures showed them run together
        print(note)
    if not jobs:
        return 0
    if up:
        tel = reply.get("telemetry") or {}
        for g in tel.get("gpus") or []:
            print(f"gpu {g.get('index')}: util {g.get('util', '-')}%  mem {g.get('mem_used_mb', '-')}/"
                  f"{g.get('mem_total_mb', '-')} MiB  {g.get('temp_c', '-')}°C  {g.get('power_w', '-')} W")
    return 0


def run(args: argparse.Namespace) -> int:
    """``wanlora status``: a spooled submission, one job, or the queue; 1 on an error or an unknown job."""
    home = home_of(args)
    job = str(args.job) if args.job is not None else None
    from wanlora.tui.spooled import find_spooled, spooled_jobs

    pending = find_spooled(home.root, job) if job else []
    if job and pending and not job.isdigit():
        return _show_spooled(args, job, pending)
    reply, up = _ask(home, job)
    if reply is None:
        return 1
    if job is None:  # jobs still in the spool exist too, even without an id
        reply = {**reply, "jobs": list(reply.get("jobs") or []) + [s.to_dict() for s in spooled_jobs(home.root)]}
    if args.json:
        return _print_json(reply, up, job)
    note = "" if up else _down_note(home)
    if job:
        return _print_job(reply, job, note)
    return _print_queue(reply, up, note)
