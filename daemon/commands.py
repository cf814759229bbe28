"""The daemon's socket commands: one handler per typed request (:mod:`daemon.protocol`), by an explicit table.

Called from the server's connection threads.  Commands that change a job run under the daemon's lock (the
main loop's), on a fresh copy of the row, and wake the loop afterwards; ``edit`` and ``retry`` first check
their job file in intake's timed checker *outside* the lock, so a slow dataset never stalls the loop.
A :class:`CommandError` is an answer (``ok: false`` with its message), not a failure of the daemon.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanlora.daemon import protocol, runner
from wanlora.daemon.hub_push import PushError
from wanlora.daemon.queue import (
    CANCELLED,
    FAILED,
    PAUSED,
    QUEUED,
    REASON_HELD,
    REASON_WAITING,
    RUNNING,
    TERMINAL,
    JobRow,
)
from wanlora.daemon.server import Send
from wanlora.daemon.telemetry import disk
from wanlora.daemon.views import job_view
from wanlora.engine.config import jobdir

if TYPE_CHECKING:
    from wanlora.daemon.supervisor import Daemon

EDITABLE = (QUEUED, PAUSED, FAILED)  # `wanlora edit`: never a running job's file

Reply = dict[str, Any]
Handler = Callable[[Any, Send], Reply]
Change = Callable[[JobRow, Any, dict[str, Any]], str]  # (fresh row, request, checked job file) -> message


class CommandError(Exception):
    """A command that cannot be done; the message goes to the user as is."""


class Commands:
    """The handlers, bound to one :class:`~daemon.supervisor.Daemon` (its queue, lock and watches)."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        changes: dict[str, Change] = {
            "cancel": self.cancel, "pause": self.pause, "resume": self.resume, "remove": self.remove,
            "save-now": self.save_now, "sample-now": self.sample_now, "priority": self.priority,
            "push": self.push, "retry": self.retry, "edit": self.edit,
        }
        self.table: dict[str, Handler] = {
            "ping": self.ping, "list": self.list_jobs, "submit": self.submit, "submission": self.submission,
            "shutdown": self.shutdown, "status": self.status, "follow": self.follow,
            **{cmd: self._changing(fn) for cmd, fn in changes.items()},
        }
        missing = set(protocol.COMMANDS) ^ set(self.table)
        assert not missing, f"commands without a handler (or handlers without a command): {missing}"

    def handle(self, msg: dict[str, Any], send: Send) -> Reply:
        """Answer one decoded request line: parse it into its typed request, run that command's handler."""
        try:
            req = protocol.parse_request(msg)
            return self.table[req.CMD](req, send)
        except (CommandError, protocol.ProtocolError) as e:
            return protocol.error(str(e))

    # ------------------------------------------------------------------ commands about the daemon
    def ping(self, req: protocol.Ping, send: Send) -> Reply:
        return protocol.ok(**self.d.info())

    def list_jobs(self, req: protocol.ListJobs, send: Send) -> Reply:
        rows = self.d.q.all()
        return protocol.ok(jobs=[job_view(self.d.home, r) for r in rows], daemon=self.d.info(),
                           telemetry=self.d.telemetry.snapshot())

    def submit(self, req: protocol.Submit, send: Send) -> Reply:
        return self.d.intake.submit(req)

    def submission(self, req: protocol.Submission, send: Send) -> Reply:
        return self.d.intake.lookup(req.submission_id)

    def shutdown(self, req: protocol.Shutdown, send: Send) -> Reply:
        self.d.request_stop()
        running = len(self.d.watch)
        return protocol.ok(message=f"daemon {os.getpid()} is stopping; {running} running job(s) "
                           "keep training and will be re-adopted by the next daemon", running=running)

    # ------------------------------------------------------------------ reading one job
    def job(self, ref: Any) -> JobRow:
        """The job a request names, by id or by (unique) name."""
        if ref is None or str(ref).strip() == "":
            raise CommandError("which job? give its id (see `wanlora status`)")
        s = str(ref).strip()
        if s.isdigit():
            row = self.d.q.get(int(s))
        else:
            named = [r for r in self.d.q.all() if r.name == s]
            if len(named) > 1:
                listed = ", ".join(f"{r.id} ({r.state})" for r in named)
                raise CommandError(f"{len(named)} jobs are named {s!r}: {listed}; give the id instead "
                                   f"(e.g. `{named[-1].id}`)")
            row = named[0] if named else None
        if row is None:
            raise CommandError(f"no job {s!r}; `wanlora status` lists the jobs")
        return row

    def status(self, req: protocol.Status, send: Send) -> Reply:
        row = self.job(req.job)
        v = job_view(self.d.home, row, detail=True)
        snap = self.d.telemetry.snapshot()
        mine = set(row.gpus.split(",")) if row.gpus else set()
        v["telemetry"] = {"gpus": [g for g in snap["gpus"] if str(g.get("index")) in mine] if mine else [],
                          "host": snap["host"]}
        v["disk"] = disk(row.output_dir or self.d.home.job_dir(row.id))
        return protocol.ok(job=v, daemon=self.d.info())

    def follow(self, req: protocol.Follow, send: Send) -> Reply:
        """Stream the job's events until it ends, pauses or the daemon stops."""
        row = self.job(req.job)
        job_dir = self.d.home.job_dir(row.id)
        cursor = jobdir.EventCursor()
        if not req.from_start:
            try:
                cursor.offset = (job_dir / jobdir.EVENTS).stat().st_size
            except FileNotFoundError:
                pass
        while True:
            current = self.d.q.get(row.id)
            got = False
            for ev in jobdir.read_events(job_dir, cursor):
                send({"event": ev})
                got = True
            if current is None:
                return protocol.ok(end=True, state="removed")
            if not got and (current.state in TERMINAL or current.state == PAUSED):
                return protocol.ok(end=True, state=current.state, reason=current.reason, message=current.message)
            if self.d.stopping.is_set():
                return protocol.ok(end=True, state=current.state, reason="daemon stopping")
            time.sleep(0.25)

    # ------------------------------------------------------------------ changing one job
    def _changing(self, change: Change) -> Handler:
        """A handler that applies ``change`` under the daemon's lock and answers with its message and the row."""

        def run(req: protocol.JobRequest, send: Send) -> Reply:
            row = self.job(req.job)
            checked = self._check_job_file(req, row) if isinstance(req, protocol.Edit | protocol.Retry) else {}
            with self.d.lock:
                row = self.job(row.id)  # fresh, under the lock
                message = change(row, req, checked)
            self.d.wake.set()
            fresh = self.d.q.get(row.id)
            return protocol.ok(message=message, job=fresh.to_dict() if fresh else None)

        return run

    def cancel(self, row: JobRow, req: protocol.Cancel, checked: dict[str, Any]) -> str:
        if row.state in TERMINAL:
            raise CommandError(f"job {row.id} is already {row.state}")
        if row.state in (QUEUED, PAUSED):
            self.d._set(row, state=CANCELLED, reason="cancelled by user", ended_ts=time.time(), held=0)
            return f"job {row.id} cancelled"
        w = self.d.watch.get(row.id)
        pid = w.pid if w else row.pid
        grace = self.d.config.cancel_grace_s
        self.d._set(row, cancel_requested=1, reason="cancelling")
        if pid and runner.signal_group(pid, signal.SIGTERM) and w:
            w.kill_at = time.monotonic() + grace
        return f"job {row.id}: SIGTERM sent; it stops at the next step boundary (SIGKILL after {grace:g} s)"

    def pause(self, row: JobRow, req: protocol.Pause, checked: dict[str, Any]) -> str:
        if row.state == QUEUED:
            self.d._set(row, held=1, reason=REASON_HELD)
            return f"job {row.id} held in the queue; `wanlora resume {row.id}` releases it"
        if row.state != RUNNING:
            raise CommandError(f"job {row.id} is {row.state}; only a running or queued job can be paused")
        jobdir.request_flag(self.d.home.job_dir(row.id), jobdir.FLAG_PAUSE)
        self.d._set(row, pause_requested=1, reason="pausing (saving a checkpoint)")
        return f"job {row.id}: pausing — the trainer saves a checkpoint at the next step, then exits and frees the GPU"

    def resume(self, row: JobRow, req: protocol.Resume, checked: dict[str, Any]) -> str:
        if row.state == PAUSED:
            self.d._set(row, state=QUEUED, reason=REASON_WAITING, held=0, fail_streak=0)
            return f"job {row.id} queued again; it resumes from its last checkpoint"
        if row.state == QUEUED and row.held:
            self.d._set(row, held=0, reason=REASON_WAITING)
            return f"job {row.id} released"
        if row.state == RUNNING and row.pause_requested:
            jobdir.clear_flag(self.d.home.job_dir(row.id), jobdir.FLAG_PAUSE)
            self.d._set(row, pause_requested=0, reason="")
            return f"job {row.id}: pause withdrawn (if the trainer already took it, the job pauses; resume it again)"
        raise CommandError(f"job {row.id} is {row.state}{' (held)' if row.held else ''}; nothing to resume")

    def _check_job_file(self, req: protocol.Edit | protocol.Retry, row: JobRow) -> dict[str, Any]:
        """``edit``'s new text / ``retry``'s frozen job.toml through intake's timed checker, before the daemon's
        lock is taken: reading a slow dataset folder must never stall watching and scheduling (the command is
        checked again under the lock, in case the job changed meanwhile).  ``{}``: nothing to check."""
        from wanlora.daemon.intake import CheckerFailed, CheckTimeout

        frozen = self.d.home.job_dir(row.id) / jobdir.JOB_TOML
        if isinstance(req, protocol.Edit):
            _editable(row)
            if not req.text.strip():
                raise CommandError("edit needs the new job file's text")
            text, source = req.text, f"job {row.id}'s edited job.toml"
        else:
            _retryable(row)
            try:
                text = frozen.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return {}  # no frozen file: the start fails with its own message
            source = str(frozen)
        try:
            return self.d.intake.check_text(text, source)
        except CheckTimeout:
            raise CommandError(f"checking job {row.id}'s file took longer than {self.d.config.intake_timeout_s:g} s "
                               "(intake_timeout_s in config.toml), so it was stopped and the job is unchanged; a "
                               "dataset folder on a hung or very slow disk does that. Run `wanlora validate` on the "
                               "file to see where it stalls") from None
        except CheckerFailed as e:
            raise CommandError(f"job {row.id} is unchanged: {e}") from None

    def retry(self, row: JobRow, req: protocol.Retry, checked: dict[str, Any]) -> str:
        _retryable(row)
        if "error" in checked:
            raise CommandError(f"job {row.id} would fail again: {checked['error']}")
        errors = [f for f in map(_finding, checked.get("findings", [])) if f.level == "error"]
        if errors:  # a job that cannot run here would only fail the same way again
            raise CommandError(f"job {row.id} would fail again: " + "; ".join(str(f) for f in errors)
                               + f"; fix it with `wanlora edit {row.id}`, then retry")
        self.d._set(row, state=QUEUED, reason=REASON_WAITING, held=0, fail_streak=0, ended_ts=None)
        return f"job {row.id} queued again; it resumes from its newest saved state"

    def remove(self, row: JobRow, req: protocol.Remove, checked: dict[str, Any]) -> str:
        if row.state == RUNNING:
            raise CommandError(f"job {row.id} is running; `wanlora cancel {row.id}` first")
        self.d.q.remove(row.id)
        return f"job {row.id} removed from the queue; its folder {self.d.home.job_dir(row.id)} is kept"

    def _flag(self, row: JobRow, flag: str) -> str:
        if row.state != RUNNING:
            raise CommandError(f"job {row.id} is {row.state}; only a running job can do that")
        jobdir.request_flag(self.d.home.job_dir(row.id), flag)
        return f"job {row.id}: {flag.replace('_', '-')} requested; the trainer does it at the next step"

    def save_now(self, row: JobRow, req: protocol.SaveNow, checked: dict[str, Any]) -> str:
        return self._flag(row, jobdir.FLAG_SAVE_NOW)

    def sample_now(self, row: JobRow, req: protocol.SampleNow, checked: dict[str, Any]) -> str:
        import tomllib

        try:
            with open(self.d.home.job_dir(row.id) / jobdir.JOB_TOML, "rb") as f:
                prompts = (tomllib.load(f).get("sample") or {}).get("prompts") or []
        except (OSError, tomllib.TOMLDecodeError):
            prompts = None
        if prompts == []:
            raise CommandError(f"job {row.id} has no [[sample.prompts]], so there is nothing to render; add a prompt "
                               f"with its ctrl_img (`wanlora pause {row.id}`, `wanlora edit {row.id}`, `wanlora resume "
                               f"{row.id}`), or render a checkpoint pair with `wanlora sample`")
        return self._flag(row, jobdir.FLAG_SAMPLE_NOW)

    def edit(self, row: JobRow, req: protocol.Edit, checked: dict[str, Any]) -> str:
        """Replace a not-running job's frozen job.toml with an edited one, checked as intake checks one (by
        :meth:`_check_job_file`, with intake's output_dir policy: an edit must not move the LoRAs outside the
        allowed roots)."""
        _editable(row)  # again: the job may have started while its file was being checked
        job = _accepted_edit(row, checked)
        findings = [_finding(f) for f in checked.get("findings", [])]
        job_dir = self.d.home.job_dir(row.id)
        current = job_dir / jobdir.JOB_TOML
        if current.exists():
            jobdir.write_text_atomic(job_dir / "job.toml.prev", current.read_text(encoding="utf-8"))
        jobdir.write_text_atomic(current, checked["job_toml"])
        out_dir = job["job"].get("output_dir")
        out = Path(out_dir).expanduser() if out_dir else job_dir / jobdir.CHECKPOINTS
        self.d._set(row, name=str(job["job"]["name"]), total_steps=int(job["training"]["steps"]),
                    gpus_req=json.dumps(job["job"].get("gpus", "auto")), output_dir=str(out),
                    warnings=json.dumps([str(f) for f in findings if f.level != "error"]))
        runner.append_log(job_dir, "job.toml edited (previous one kept as job.toml.prev)")
        tail = {FAILED: f"; `wanlora retry {row.id}` queues it again", PAUSED: f"; `wanlora resume {row.id}` continues it"}
        resume = f" It resumes from step {row.saved_step}." if row.saved_step else ""
        return f"job {row.id} updated{tail.get(row.state, '')}.{resume}"

    def push(self, row: JobRow, req: protocol.Push, checked: dict[str, Any]) -> str:
        try:
            return self.d.pushes.request(row, repo=req.repo, private=req.private)
        except PushError as e:
            raise CommandError(str(e)) from None

    def priority(self, row: JobRow, req: protocol.Priority, checked: dict[str, Any]) -> str:
        value = req.priority
        if value == "top":
            value = self.d.q.max_priority() + 1
        if isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise CommandError("priority must be an integer (higher starts first) or 'top'")
        self.d._set(row, priority=value)
        return f"job {row.id} priority {value}"


def _retryable(row: JobRow) -> None:
    if row.state not in (FAILED, CANCELLED):
        raise CommandError(f"job {row.id} is {row.state}; only failed or cancelled jobs can be retried")


def _editable(row: JobRow) -> None:
    if row.state not in EDITABLE:
        what = "running: pause it first (`wanlora pause " + str(row.id) + "`)" if row.state == RUNNING else row.state
        raise CommandError(f"job {row.id} is {what}; only a queued, held, paused or failed job can be edited")


def _accepted_edit(row: JobRow, checked: dict[str, Any]) -> dict[str, Any]:
    """The edited job (as the checker resolved it), or CommandError saying why it was not accepted."""
    if "error" in checked:
        raise CommandError(f"the edited job was not accepted (the old one is kept): {checked['error']}")
    findings = [_finding(f) for f in checked.get("findings", [])]
    errors = [f for f in findings if f.level == "error"]
    job = checked.get("job")
    if not errors and isinstance(job, dict) and "training" not in job:
        raise CommandError(f"the edited file is not a training job (a caption job?); job {row.id} is unchanged "
                           "(a caption job is not edited: remove it and queue a new one)")
    if errors or not isinstance(job, dict) or not isinstance(checked.get("job_toml"), str):
        raise CommandError("the edited job was not accepted (the old one is kept):\n"
                           + "\n".join(str(f) for f in (errors or findings)))
    return job


def _finding(d: dict[str, Any]) -> Any:
    """A finding as the checker process sent it (engine.config.findings, torch-free)."""
    from wanlora.engine.config.findings import Finding

    return Finding(**d)
