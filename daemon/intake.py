"""Intake: spool files and socket submissions become queued jobs exactly once, without ever blocking the daemon.

Guarantees (docs/architecture.md, "The daemon's guarantees"):

- **Exactly once.** Every submission carries a submission id chosen by the client (``wanlora submit`` makes
  one and puts it in the spool file's name and in the request); the queue has a unique index on it, so a
  submission that reaches the daemon twice (a retry after a dropped connection, the spool fallback, a
  leftover in ``spool/cur`` after a crash) is queued once and answered with the same job id.  A plain
  file dropped into ``spool/`` gets its id from its claimed name, which survives restarts the same way.
- **Crash-atomic.** The job folder (``job.toml``, ``submitted.toml``, ``.submission``) is built and renamed
  into ``jobs/<id>/`` inside the queue's insert transaction, before the commit; the spool file is removed
  only after the commit.  A kill before the commit leaves the spool file in ``cur/`` (re-done at start,
  the half-built folder replaced); a kill after it leaves a complete job whose spool file is dropped as a
  duplicate.  No window loses a job or queues it twice.
- **Never blocks.** This runs in its own thread; the job file and its dataset are checked in a separate
  process (:mod:`daemon.intake_worker`) with a time limit (``intake_timeout_s``).  A check that runs past
  it is killed, and the file is rejected with the reason and moved out of ``cur/``, so a restart never
  meets it again.  The main loop and the socket keep answering meanwhile.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import tomli_w
from wanlora.daemon import faults, protocol, runner
from wanlora.daemon.config import DaemonConfig
from wanlora.daemon.home import Home
from wanlora.daemon.queue import PAUSED, QUEUED, RUNNING, JobRow, Queue, QueueError
from wanlora.daemon.spool import (
    SID_RE,
    Rejected,
    Spool,
    _fsync_dir,
    find_rejection,
    find_submission,
    new_submission_id,
    original_name,
    submission_id_of,
    submit_file,
)
from wanlora.engine.config import jobdir
from wanlora.engine.config.findings import Finding

WORKER_MODULE = "wanlora.daemon.intake_worker"
WORKER_READY_S = 120.0  # imports of the checker (pydantic, PIL, decord) on a busy machine
MARKER = ".submission"  # in a job folder: the submission id it was built for
KEEP_RESULTS = 1000


class CheckTimeout(Exception):
    """The checker ran past the intake time limit and was killed."""


class CheckerFailed(Exception):
    """The checker process died or answered nonsense (the message says what happened)."""


class Checker:
    """The checker process: started on first use, killed on timeout, started again for the next file."""

    def __init__(self, stderr: IO[str] | None = None) -> None:
        self.stderr = stderr
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""

    def _spawn(self) -> None:
        try:
            err: Any = self.stderr if self.stderr is not None and self.stderr.fileno() >= 0 else None
        except (OSError, ValueError, AttributeError):
            err = None
        self.proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=err, start_new_session=True, close_fds=True)
        self._buf = b""
        try:
            ready = self._readline(WORKER_READY_S)
        except CheckTimeout:
            self.kill()
            raise CheckerFailed(f"the job checker did not start within {WORKER_READY_S:g} s") from None
        if not json.loads(ready).get("ready"):
            self.kill()
            raise CheckerFailed("the job checker did not start")

    def warm(self) -> None:
        """Start the process ahead of the first file (imports take a second or two)."""
        if self.proc is None or self.proc.poll() is not None:
            self._spawn()

    def _readline(self, timeout: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckTimeout()
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                code = self.proc.wait(timeout=5)
                self.proc = None
                raise CheckerFailed(f"the job checker exited ({runner.describe_exit(code)}) while checking it; "
                                    "run `wanlora validate` on it")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def check(self, text: str, source: str, output_roots: list[str], timeout: float) -> dict[str, Any]:
        """The checker's verdict on one job file; CheckTimeout past ``timeout`` s (the process is killed)."""
        self.warm()
        assert self.proc is not None and self.proc.stdin is not None
        req = json.dumps({"text": text, "source": source, "output_roots": output_roots}) + "\n"
        try:
            self.proc.stdin.write(req.encode())
            self.proc.stdin.flush()
            line = self._readline(timeout)
        except CheckTimeout:
            self.kill()
            raise
        except (BrokenPipeError, OSError) as e:
            self.kill()
            raise CheckerFailed(f"the job checker stopped ({e}); run `wanlora validate` on it") from None
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            self.kill()
            raise CheckerFailed("the job checker answered garbage; run `wanlora validate` on it") from None
        return reply if isinstance(reply, dict) else {"error": "the job checker answered garbage"}

    def kill(self) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class Intake:
    """The intake thread plus the socket side of ``submit`` / ``submission``."""

    def __init__(self, home: Home, config: DaemonConfig, queue: Queue, lock: threading.RLock, *,
                 log: Callable[[str], None], on_queued: Callable[[JobRow], None], stderr: IO[str] | None = None) -> None:
        self.home = home
        self.config = config
        self.q = queue
        self.lock = lock  # the daemon's lock: every queue change happens under it
        self.log = log
        self.on_queued = on_queued
        self.spool = Spool(home, config.settle_s, config.max_job_file_bytes)
        self.checker = Checker(stderr)
        self.command_checker = Checker(stderr)  # edit / retry: see check_text
        self._command_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._results: dict[str, dict[str, Any]] = {}
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="wanlora-intake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop taking files; a check in progress is abandoned and its file stays in cur/ for the next daemon."""
        self._stop.set()
        self._wake.set()
        self.checker.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.checker.kill()
        self.command_checker.kill()

    def poke(self) -> None:
        self._wake.set()

    def recover(self) -> None:
        """Remove folders half-built by an intake that died before its commit (their spool file is still in cur/)."""
        try:
            entries = list(self.home.jobs.iterdir())
        except OSError:
            return
        for d in entries:
            if d.name.startswith(".intake-") and d.is_dir():
                shutil.rmtree(d, ignore_errors=True)
                self.log(f"removed the half-built job folder {d.name} (its spool file is taken again)")

    def _loop(self) -> None:
        try:
            self.checker.warm()
        except Exception as e:
            self.log(f"warning: the job checker did not start ({e}); retrying with the first job")
        while not self._stop.is_set():
            try:
                self.pass_once()
            except Exception as e:  # keep taking jobs; the log says what broke
                self.log(f"error in intake: {type(e).__name__}: {e}")
            timeout = self.config.rescan_interval_s
            pending = self.spool.pending_drops()
            if pending is not None:
                timeout = min(timeout, pending + 0.01)
            self._wake.wait(timeout)
            self._wake.clear()

    def pass_once(self) -> None:
        """Leftovers in cur/ first (a previous daemon's unfinished intake), then what is ready."""
        for p in self.spool.leftovers():
            if self._stop.is_set():
                return
            self._guarded(p, original_name(p))
        for p in self.spool.ready():
            if self._stop.is_set():
                return
            claimed = self.spool.claim(p)
            if claimed is not None:
                self._guarded(claimed, p.name)

    def _guarded(self, claimed: Path, original: str) -> None:
        try:
            self.take(claimed, original)
        except Exception as e:
            self.log(f"error in intake of {original!r}: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------ results for waiting submitters
    def _publish(self, sid: str, reply: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            self._results[sid] = reply
            while len(self._results) > KEEP_RESULTS:
                self._results.pop(next(iter(self._results)))
            self._cond.notify_all()
        return reply

    def _wait(self, sid: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while sid not in self._results:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(min(left, 0.5))
            return self._results[sid]

    # ------------------------------------------------------------------ one file
    @staticmethod
    def _sid_for(claimed: Path, original: str) -> str:
        return submission_id_of(original) or f"spool:{claimed.name}"

    def take(self, claimed: Path, original: str) -> dict[str, Any]:
        """Check one claimed spool file and queue it (folder first, then the commit) or reject it."""
        sid = self._sid_for(claimed, original)
        with self.lock:
            done = self.q.by_submission(sid) or self.q.by_source(claimed.name)
        if done is not None:  # queued already (a crash after the commit, or the same submission twice)
            claimed.unlink(missing_ok=True)
            self.log(f"spool file {original!r} is submission {sid}, already job {done.id}: not queued again")
            return self._publish(sid, self._accepted(done, sid, duplicate=True))
        try:
            text = self.spool.read(claimed)
        except Rejected as e:
            return self._reject(claimed, original, sid, str(e))
        timeout = self.config.intake_timeout_s
        try:
            res = self.checker.check(text, original, [str(self.home.root), *self.config.output_roots], timeout)
        except (CheckTimeout, CheckerFailed) as e:
            if self._stop.is_set():  # the daemon is stopping: not the file's fault, leave it in cur/
                return protocol.error("the daemon is stopping; the job stays in the spool", submission_id=sid)
            if isinstance(e, CheckerFailed):
                return self._reject(claimed, original, sid, str(e))
            return self._reject(claimed, original, sid,
                                f"checking it took longer than {timeout:g} s (intake_timeout_s in config.toml), so "
                                "it was stopped; a dataset folder on a hung or very slow disk, or one with thousands "
                                "of clips, does that. Run `wanlora validate` on it to see where it stalls")
        if "error" in res:
            return self._reject(claimed, original, sid, str(res["error"]))
        findings = [Finding(**f) for f in res.get("findings", [])]
        errors = [f for f in findings if f.level == "error"]
        job = res.get("job")
        if errors or not isinstance(job, dict):
            shown = errors or findings
            return self._reject(claimed, original, sid, "\n".join(str(f) for f in shown) or "invalid job", shown)
        warnings = [str(f) for f in findings if f.level != "error"]
        return self._queue(claimed, original, sid, job, text, warnings)

    def _queue(self, claimed: Path, original: str, sid: str, job: dict[str, Any], text: str,
               warnings: list[str]) -> dict[str, Any]:
        name = str(job["job"]["name"])
        out = str(job["job"].get("output_dir") or "")
        out_abs = str(Path(out).expanduser()) if out and Path(out).expanduser().is_absolute() else ""
        with self.lock:
            clash = self._output_clash(name, out_abs)
            if clash is not None:
                return self._reject(
                    claimed, original, sid,
                    f"error: job.output_dir: job {clash.id} ({clash.name}, {clash.state}) already writes "
                    f"{out_abs}/{name}_*.safetensors; two jobs with the same name and output_dir would overwrite each "
                    f"other's LoRA files. Fix: give this job another job.name or output_dir, or wait for / cancel "
                    f"job {clash.id}")
            try:
                row = self.q.add(name=name, gpus_req=job["job"].get("gpus", "auto"),
                                 total_steps=int(job.get("training", {}).get("steps", 0)), source=claimed.name, warnings=warnings,
                                 output_dir=out_abs, submission_id=sid,
                                 before_commit=lambda job_id: self._build_folder(job_id, sid, job, text))
            except (QueueError, OSError) as e:  # disk full: keep the file in cur/ and try again on a later pass
                why = str(e)
                if isinstance(e, OSError):
                    from wanlora.daemon.diskspace import describe_free

                    why = f"cannot write the job folder in {self.home.jobs} ({e.strerror}; {describe_free(self.home.jobs)})"
                self.log(f"spool file {original!r} not queued yet: {why}; it stays in {self.home.spool_cur}")
                return self._publish(sid, protocol.ok(id=None, pending=True, submission_id=sid,
                                                      message=f"not queued yet: {why}; it stays in the spool and is "
                                                      "queued once there is room"))
        faults.point("intake-unlink")
        claimed.unlink(missing_ok=True)
        _fsync_dir(claimed.parent)
        runner.append_log(self.home.job_dir(row.id), f"queued from spool file {original!r} (submission {sid})")
        self.log(f"job {row.id} {row.name}: queued from {original!r}")
        self.on_queued(row)
        return self._publish(sid, self._accepted(row, sid))

    def _output_clash(self, name: str, out_abs: str) -> JobRow | None:
        """A queued/running/paused job that would write the same LoRA files (same name in the same folder)."""
        if not out_abs:
            return None  # the job's own folder: unique per job
        mine = os.path.realpath(out_abs)
        for r in self.q.all((QUEUED, RUNNING, PAUSED)):
            if r.name == name and r.output_dir and os.path.realpath(r.output_dir) == mine:
                return r
        return None

    def _build_folder(self, job_id: int, sid: str, job: dict[str, Any], text: str) -> str:
        """jobs/<id>/ with job.toml complete, built aside and renamed in (inside the insert transaction)."""
        jobs = self.home.jobs
        final = self.home.job_dir(job_id)
        if final.exists():
            try:
                theirs = (final / MARKER).read_text().strip()
            except OSError:
                theirs = ""
            if theirs and (theirs == sid or self.q.by_submission(theirs) is None):
                shutil.rmtree(final)  # built by an intake that died before its commit: its file is still in cur/
            else:  # left by a database that was deleted: keep it, out of the way
                final.rename(final.with_name(f".orphan-{job_id}-{int(time.time())}"))
        tmp = jobs / f".intake-{sid.replace(':', '_')[:80]}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(mode=0o700)
        out = str(job["job"].get("output_dir") or "")
        if out and not Path(out).expanduser().is_absolute():  # inside the job folder: freeze the absolute path
            out = str(final / os.path.normpath(out))
            job = {**job, "job": {**job["job"], "output_dir": out}}
        out_dir = str(Path(out).expanduser()) if out else str(final / jobdir.CHECKPOINTS)
        jobdir.write_text_atomic(tmp / jobdir.JOB_TOML, tomli_w.dumps(job))
        jobdir.write_text_atomic(tmp / "submitted.toml", text)
        jobdir.write_text_atomic(tmp / MARKER, sid + "\n")
        faults.point("intake-folder")
        os.rename(tmp, final)
        _fsync_dir(jobs)
        faults.point("intake-commit")
        return out_dir

    def _reject(self, claimed: Path, original: str, sid: str, reason: str,
                findings: list[Finding] | None = None) -> dict[str, Any]:
        reason = reason.replace(str(claimed), original)
        try:
            err = self.spool.reject(claimed, original, reason)
        except OSError as e:  # disk full: the reason still reaches the log and a waiting submitter
            err = Path(f"{self.home.spool_rejected / original}.error")
            self.log(f"could not write {err} ({e.strerror})")
        self.log(f"rejected spool file {original!r}: {reason.splitlines()[0][:300]}")
        return self._publish(sid, protocol.error(f"rejected: {reason}", rejected=str(err), submission_id=sid,
                                                 findings=[f.to_dict() for f in findings or []]))

    @staticmethod
    def _accepted(row: JobRow, sid: str, duplicate: bool = False) -> dict[str, Any]:
        try:
            warnings = json.loads(row.warnings)
        except json.JSONDecodeError:
            warnings = []
        return protocol.ok(id=row.id, name=row.name, warnings=warnings, submission_id=sid, duplicate=duplicate)

    # ------------------------------------------------------------------ a job file from a command
    def check_text(self, text: str, source: str) -> dict[str, Any]:
        """The checker's verdict on a job file that did not come through the spool (``edit``, ``retry``), timed
        as intake times one (CheckTimeout past ``intake_timeout_s``, the process killed; CheckerFailed).

        The caller must not hold the daemon's lock: a slow dataset folder then stalls only this command, never
        watching or scheduling.  A checker of its own (the intake thread may be in the middle of a file), used
        by one command at a time."""
        with self._command_lock:
            return self.command_checker.check(text, source, [str(self.home.root), *self.config.output_roots],
                                              self.config.intake_timeout_s)

    # ------------------------------------------------------------------ socket commands
    def submit(self, req: protocol.Submit) -> dict[str, Any]:
        """``submit``: spool the text under its submission id and wait for the intake thread's verdict."""
        text = req.text
        sid = req.submission_id or new_submission_id()
        if not SID_RE.match(sid):
            return protocol.error(protocol.SID_FORMAT)
        name = Path(req.filename).name
        with self.lock:
            done = self.q.by_submission(sid)
        if done is not None:
            return self._accepted(done, sid, duplicate=True)
        if find_submission(self.home, sid) is None:
            rejected = find_rejection(self.home, sid)
            if rejected is not None:
                return protocol.error(f"rejected: {_error_text(rejected)}", rejected=str(rejected), submission_id=sid)
            try:
                submit_file(self.home, text, name=name, submission_id=sid)
            except OSError as e:
                from wanlora.daemon.diskspace import describe_free

                return protocol.error(f"cannot write to {self.home.spool} ({e.strerror}; "
                                      f"{describe_free(self.home.spool)}); free space there and submit again")
        faults.point("submit-spooled")
        self.poke()
        reply = self._wait(sid, self.config.intake_timeout_s + WORKER_READY_S)
        if reply is None:
            return protocol.ok(id=None, pending=True, submission_id=sid,
                               message="still being checked; it is in the spool and is queued (or rejected) soon")
        faults.point("submit-reply")
        return reply

    def lookup(self, sid: str) -> dict[str, Any]:
        """``submission``: what became of a submission id — queued (its job), pending in the spool, rejected, or unknown."""
        if not isinstance(sid, str) or not sid:
            return protocol.error("submission needs submission_id")
        where = find_submission(self.home, sid)
        with self.lock:
            row = self.q.by_submission(sid)
        if row is not None:
            return protocol.ok(found="queued", **{k: v for k, v in self._accepted(row, sid).items() if k != "ok"})
        if where is not None:
            return protocol.ok(found="pending", id=None, spooled=str(where[1]), submission_id=sid)
        rejected = find_rejection(self.home, sid)
        if rejected is not None:
            return protocol.ok(found="rejected", id=None, rejected=str(rejected), error=_error_text(rejected),
                               submission_id=sid)
        return protocol.ok(found="unknown", id=None, submission_id=sid)


def _error_text(err: Path) -> str:
    try:
        return err.read_text(encoding="utf-8", errors="replace").split("\n", 1)[-1].strip()
    except OSError:
        return f"see {err}"
