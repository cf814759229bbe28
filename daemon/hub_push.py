"""Upload a completed job's final LoRA pair + a model card to the Hugging Face Hub, never holding the queue.

``[save] push_to_hub = "owner/name"`` queues an upload when the job completes; ``wanlora push JOB`` queues
one again (after a failure, a ``hf auth login``, or for another repo).  Each upload's state is one file,
``<home>/push/<job id>.json`` (pending / uploading / done + URL / failed + reason and fix), which
``wanlora status`` (daemon up or down) and the TUI read.  The job folder and the output folder are only
read: the card is built in memory, never written next to the LoRAs.

Why a child process per attempt (``python -m wanlora.daemon.hub_push``) rather than a thread doing the
upload inside the daemon:
- a stalled upload is killed at ``push_timeout_s``; a thread stuck in a socket read cannot be stopped;
- each attempt looks the token up afresh (``HF_TOKEN``, else the file ``hf auth login`` writes), so a
  login after a failure works for ``wanlora push`` without restarting the daemon;
- the daemon never imports huggingface_hub and its HTTP stack (it stays small, and torch-free as ever).
One thread of the daemon (:class:`Pusher`) schedules the attempts (one upload at a time, retries with
exponential backoff) and records the states; the main loop only queues an upload, so the next job
starts while an upload runs or waits to be retried.  A daemon stopped mid-upload leaves the upload
pending (or "uploading", after a crash); the next daemon starts it again, and the Hub skips the files
it already has.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanlora.daemon import faults
from wanlora.engine.config import jobdir

if TYPE_CHECKING:
    from wanlora.daemon.config import DaemonConfig
    from wanlora.daemon.queue import JobRow

PENDING, UPLOADING, DONE, FAILED = "pending", "uploading", "done", "failed"
PUSH_DIR = "push"
WORKER_MODULE = "wanlora.daemon.hub_push"
KILL_GRACE_S = 5.0


class PushError(Exception):
    """A ``push`` request that cannot be done; the message says why and what to do."""


class PushFailure(Exception):
    """An upload attempt that failed: ``retry`` says whether trying again later can help."""

    def __init__(self, reason: str, fix: str = "", *, retry: bool) -> None:
        super().__init__(reason)
        self.reason, self.fix, self.retry = reason, fix, retry


# ---------------------------------------------------------------------------------------------- state files
def push_dir(home_root: Path) -> Path:
    return Path(home_root) / PUSH_DIR


def state_path(home_root: Path, job_id: int) -> Path:
    return push_dir(home_root) / f"{int(job_id)}.json"


def log_path(home_root: Path, job_id: int) -> Path:
    return push_dir(home_root) / f"{int(job_id)}.log"


@dataclass
class PushState:
    """One job's upload as ``<home>/push/<id>.json`` holds it (and ``wanlora status --json`` shows it)."""

    job_id: int
    name: str
    repo: str
    private: bool
    job_dir: str
    output_dir: str
    state: str = PENDING
    attempt: int = 0  # attempts started so far
    max_attempts: int = 5
    next_try_ts: float = 0.0
    url: str = ""
    commit: str = ""
    files: list[str] = field(default_factory=list)
    reason: str = ""  # the last failure (kept while a retry waits)
    fix: str = ""
    queued_ts: float = 0.0
    started_ts: float | None = None
    ended_ts: float | None = None
    updated_ts: float = 0.0
    log: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PushState | None:
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError:  # a field missing: not one of ours
            return None


def read_state(home_root: Path, job_id: int) -> dict[str, Any] | None:
    """The upload state of a job as a dict, or None when it never had one (or the file is unreadable)."""
    try:
        with open(state_path(home_root, job_id), encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def push_settings(job_dir: Path) -> tuple[str, bool] | None:
    """(repo, private) from the frozen job.toml's ``[save]``; None when push_to_hub is empty or unreadable."""
    try:
        with open(Path(job_dir) / jobdir.JOB_TOML, "rb") as f:
            save = tomllib.load(f).get("save") or {}
    except (OSError, tomllib.TOMLDecodeError):
        return None
    repo = save.get("push_to_hub")
    if not isinstance(repo, str) or not repo.strip():
        return None
    private = save.get("push_private", True)
    return repo.strip(), private if isinstance(private, bool) else True


def describe(d: dict[str, Any], now: float | None = None) -> list[str]:
    """The upload state in words, first line the verdict (``wanlora status JOB`` and the TUI job view)."""
    now = time.time() if now is None else now
    repo, state = d.get("repo", "?"), d.get("state")
    vis = "private" if d.get("private", True) else "public"
    tries = f"attempt {d.get('attempt', 0)} of {d.get('max_attempts', '?')}"
    if state == DONE:
        return [f"done: {d.get('url') or repo} ({vis}, {len(d.get('files') or [])} files)"]
    if state == UPLOADING:
        return [f"uploading to {repo} ({vis}, {tries})"]
    if state == PENDING:
        wait = float(d.get("next_try_ts") or 0) - now
        when = f"retry in {wait:.0f} s" if wait >= 1 else "starting"
        lines = [f"pending: {repo} ({vis}), {when}" + (f" ({tries} failed)" if d.get("attempt") else "")]
        if d.get("reason"):
            lines.append(f"last try: {d['reason']}")
        return lines
    if state == FAILED:
        lines = [f"failed: {repo}: {d.get('reason') or 'unknown error'}"]
        if d.get("fix"):
            lines.append(f"fix: {d['fix']}")
        if d.get("log"):
            lines.append(f"log: {d['log']}")
        return lines
    return [f"{state}: {repo}"]


# ---------------------------------------------------------------------------------------------- the scheduler
class Pusher:
    """The daemon's upload thread: queues, runs (one child at a time), retries and records uploads."""

    def __init__(self, home_root: Path, config: DaemonConfig, log: Callable[[str], None]) -> None:
        self.root = Path(home_root)
        self.dir = push_dir(self.root)
        self.config = config
        self.log = log
        self._lock = threading.Lock()
        self._states: dict[int, PushState] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    def start(self, completed: Iterable[JobRow] = ()) -> None:
        """Load the states; uploads a stopped daemon left pending (or mid-way) go again; completed jobs whose
        upload was never queued (the daemon died between the two writes) get one.  Then start the thread."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        now = time.time()
        for p in sorted(self.dir.glob("*.json")):
            st = PushState.from_dict(read_state(self.root, int(p.stem)) or {}) if p.stem.isdigit() else None
            if st is None:
                continue
            if st.state == UPLOADING:  # the daemon that ran it is gone, and so is its child's result
                st.state, st.attempt = PENDING, max(0, st.attempt - 1)
                st.reason = "interrupted: the daemon stopped during the upload; starting it again"
                st.next_try_ts = now
            if st.state == PENDING:
                self.log(f"job {st.job_id}: resuming the pending upload to {st.repo}")
                self._write(st)
            self._states[st.job_id] = st
        for row in completed:
            if row.id not in self._states:
                self.job_completed(row, why="completed while no upload was recorded")
        self._thread = threading.Thread(target=self._run, name="hub-push", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; an upload in flight is killed and left pending for the next daemon."""
        self._stopping.set()
        self._wake.set()
        child = self._child
        if child is not None:
            _kill(child, signal.SIGTERM)
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- what the daemon calls
    def job_completed(self, row: JobRow, why: str = "the job completed") -> None:
        """The hook where a job completes: queue its upload when its job file asks for one."""
        settings = push_settings(Path(self._job_dir(row)))
        if settings is not None:
            self._queue(row, *settings, why=why)

    def request(self, row: JobRow, repo: str | None = None, private: bool | None = None) -> str:
        """``wanlora push JOB [--repo R] [--public|--private]``: queue (again) the upload of a completed job."""
        from wanlora.engine.config.schema import hub_repo_problem

        if row.state != "completed":
            raise PushError(f"job {row.id} is {row.state}; only a completed job has a final LoRA pair to upload")
        with self._lock:
            cur = self._states.get(row.id)
        if cur is not None and cur.state == UPLOADING:
            raise PushError(f"job {row.id} is being uploaded to {cur.repo} right now (attempt {cur.attempt} of "
                            f"{cur.max_attempts}); `wanlora status {row.id}` shows how it ends")
        settings = push_settings(Path(self._job_dir(row)))
        repo = (repo or "").strip() or (cur.repo if cur else "") or (settings[0] if settings else "")
        if not repo:
            raise PushError(f"job {row.id} has no save.push_to_hub; name the repo: "
                            f"`wanlora push {row.id} --repo yourname/{row.name}`")
        problem = hub_repo_problem(repo)
        if problem:
            raise PushError(f"{repo!r} is not a Hub repo id: {problem}")
        if private is None:
            if settings and settings[0] == repo:
                private = settings[1]
            elif cur is not None and cur.repo == repo:
                private = cur.private
            else:
                private = True
        self._queue(row, repo, private, why="asked for with `wanlora push`")
        return (f"job {row.id}: upload to {repo} ({'private' if private else 'public'}) queued; "
                f"`wanlora status {row.id}` shows its progress")

    # ---- internals
    def _job_dir(self, row: JobRow) -> str:
        return str(self.root / "jobs" / str(row.id))

    def _queue(self, row: JobRow, repo: str, private: bool, why: str) -> None:
        now = time.time()
        job_dir = self._job_dir(row)
        st = PushState(job_id=row.id, name=row.name, repo=repo, private=private, job_dir=job_dir,
                       output_dir=row.output_dir or str(Path(job_dir) / jobdir.CHECKPOINTS),
                       max_attempts=max(1, self.config.push_attempts), next_try_ts=now, queued_ts=now,
                       log=str(log_path(self.root, row.id)))
        with self._lock:
            self._states[row.id] = st
            self._write(st)
        self.log(f"job {row.id}: upload to {repo} queued ({why})")
        self._wake.set()

    def _write(self, st: PushState) -> None:
        st.updated_ts = time.time()
        self.dir.mkdir(mode=0o700, exist_ok=True)
        jobdir.write_json_atomic(state_path(self.root, st.job_id), st.to_dict())

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                due = sorted((s for s in self._states.values() if s.state == PENDING),
                             key=lambda s: (s.next_try_ts, s.job_id))
            if not due:
                self._wake.wait()
                self._wake.clear()
                continue
            wait = due[0].next_try_ts - time.time()
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
                continue
            try:
                self._attempt(due[0].job_id)
            except Exception as e:  # never let the thread die: record it and go on
                self.log(f"job {due[0].job_id}: upload error: {type(e).__name__}: {e}")
                with self._lock:
                    st = self._states.get(due[0].job_id)
                    if st is not None and st.state in (PENDING, UPLOADING):
                        self._settle(st, {"ok": False, "retry": True, "reason": f"{type(e).__name__}: {e}"})

    def _attempt(self, job_id: int) -> None:
        with self._lock:
            st = self._states.get(job_id)
            if st is None or st.state != PENDING:
                return
            st.attempt += 1
            st.max_attempts = max(st.attempt, st.max_attempts)
            st.state, st.started_ts, st.ended_ts, st.fix = UPLOADING, time.time(), None, ""
            self._write(st)
            snapshot = PushState(**asdict(st))
        self.log(f"job {job_id}: uploading to {snapshot.repo} (attempt {snapshot.attempt} of {snapshot.max_attempts})")
        result = self._run_child(snapshot)
        with self._lock:
            st = self._states.get(job_id)
            if st is None or st.state != UPLOADING or st.queued_ts != snapshot.queued_ts:
                return  # re-queued meanwhile (cannot happen while uploading, but never overwrite a newer request)
            if result is None:  # the daemon is stopping: not a failure, the next daemon tries again
                st.state, st.attempt, st.next_try_ts = PENDING, st.attempt - 1, time.time()
                st.reason = "interrupted: the daemon stopped during the upload; the next daemon starts it again"
                self._write(st)
                return
            self._settle(st, result)

    def _settle(self, st: PushState, result: dict[str, Any]) -> None:
        """Record an attempt's result (under the lock): done, a retry after a backoff, or failed."""
        now = time.time()
        if result.get("ok"):
            st.state, st.url, st.commit = DONE, str(result.get("url") or ""), str(result.get("commit") or "")
            st.files, st.reason, st.fix, st.ended_ts = list(result.get("files") or []), "", "", now
            self._write(st)
            self.log(f"job {st.job_id}: uploaded to {st.url or st.repo} ({len(st.files)} files)")
            return
        reason = str(result.get("reason") or "the upload failed")
        again = f"`wanlora push {st.job_id}` tries again"
        if result.get("retry") and st.attempt < st.max_attempts:
            delay = min(self.config.push_backoff_s * 2 ** (st.attempt - 1), self.config.push_backoff_max_s)
            st.state, st.reason, st.fix, st.next_try_ts = PENDING, reason, str(result.get("fix") or ""), now + delay
            self._write(st)
            self.log(f"job {st.job_id}: upload attempt {st.attempt} of {st.max_attempts} failed ({reason}); "
                     f"retrying in {delay:g} s")
            return
        if result.get("retry"):
            reason = f"gave up after {st.attempt} attempts: {reason}"
            fix = str(result.get("fix") or "check this machine's network and https://status.huggingface.co")
        else:
            fix = str(result.get("fix") or f"see {st.log}")
        fix = fix.replace("`wanlora push JOB", f"`wanlora push {st.job_id}")  # the child does not know the id
        st.state, st.reason, st.fix, st.ended_ts = FAILED, reason, f"{fix}; then {again}", now
        self._write(st)
        self.log(f"job {st.job_id}: upload to {st.repo} failed: {reason}")

    def _run_child(self, st: PushState) -> dict[str, Any] | None:
        """One attempt in a child process; its result dict, or None when the daemon stopped it."""
        result_file = self.dir / f".{st.job_id}.result.json"
        result_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", WORKER_MODULE, "--repo", st.repo, "--private" if st.private else "--public",
               "--job-dir", st.job_dir, "--output-dir", st.output_dir, "--result", str(result_file)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        with open(st.log, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {st.attempt} of {st.max_attempts}: "
                      f"{st.repo}\n".encode())
            log.flush()
            try:
                child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True, close_fds=True)
            except OSError as e:
                return {"ok": False, "retry": True, "reason": f"could not start the uploader: {e}"}
        self._child = child
        deadline = time.monotonic() + self.config.push_timeout_s
        timed_out = False
        try:
            while True:
                try:
                    code = child.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if self._stopping.is_set():
                        _kill(child, signal.SIGTERM)
                        return None
                    if time.monotonic() > deadline:
                        _kill(child, signal.SIGKILL)
                        timed_out = True
        finally:
            self._child = None
        try:
            result = json.loads(result_file.read_text(encoding="utf-8"))
            result_file.unlink(missing_ok=True)
            if isinstance(result, dict):
                return result
        except (OSError, ValueError):
            pass
        if self._stopping.is_set():
            return None
        if timed_out:
            return {"ok": False, "retry": True, "reason": f"the upload took longer than push_timeout_s = "
                    f"{self.config.push_timeout_s:g} s and was stopped",
                    "fix": "raise push_timeout_s in the daemon's config.toml for a slow uplink"}
        return {"ok": False, "retry": True, "reason": f"the uploader exited with code {code} and no result "
                f"(see {st.log})"}


def _kill(child: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the uploader's own process group, then make sure it is gone."""
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        return
    try:
        child.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        child.wait(timeout=KILL_GRACE_S)


# ---------------------------------------------------------------------------------------------- the child
@dataclass
class UploadPlan:
    """What one upload sends: (local file, path in the repo) pairs and the card's text."""

    files: list[tuple[Path, str]]
    card: str
    step: int | None


def plan_upload(job_dir: Path, output_dir: Path, repo: str, private: bool) -> UploadPlan:
    """The final pair of every trained expert, the newest previews and the card; nothing is written."""
    from wanlora.daemon.model_card import Preview, render_card
    from wanlora.engine.config.findings import JobError
    from wanlora.engine.config.io import load_job

    try:
        job = load_job(Path(job_dir) / jobdir.JOB_TOML)
    except (JobError, OSError) as e:
        raise PushFailure(f"cannot read the job file {Path(job_dir) / jobdir.JOB_TOML}: {e}",
                          "the job folder must keep the job.toml it trained with", retry=False) from None
    job.save.push_to_hub, job.save.push_private = repo, private  # the card describes this upload
    files: list[tuple[Path, str]] = []
    names: dict[str, str] = {}
    for expert in job.multistage.trained():
        src = Path(output_dir) / f"{job.job.name}_{expert}.safetensors"
        if not src.is_file():
            raise PushFailure(f"the final LoRA file {src} is missing",
                              f"put the job's final pair back in {output_dir}", retry=False)
        files.append((src, src.name))
        names[expert] = src.name
    status = jobdir.read_status(Path(job_dir)) or {}
    step = status.get("step") if isinstance(status.get("step"), int) else None
    previews: list[Preview] = []
    samples = [e for e in jobdir.read_events(Path(job_dir)) if e.get("type") == "sample"]
    if samples:
        last = max(int(e.get("step") or 0) for e in samples)
        for e in sorted((e for e in samples if int(e.get("step") or 0) == last), key=lambda e: e.get("index") or 0):
            video = png = None
            for key in ("path", "png"):
                p = Path(str(e.get(key) or ""))
                if e.get(key) and p.is_file():
                    files.append((p, f"samples/{p.name}"))
                    if key == "path":
                        video = f"samples/{p.name}"
                    else:
                        png = f"samples/{p.name}"
            if video or png:
                previews.append(Preview(video=video, png=png, prompt=str(e.get("prompt") or ""), step=last))
    card = render_card(job, repo=repo, files=names, previews=previews, final_step=step)
    return UploadPlan(files=files, card=card, step=step)


def upload(repo: str, private: bool, job_dir: Path, output_dir: Path) -> dict[str, Any]:
    """Create the repo (if missing) and commit the pair, the previews and README.md in one commit."""
    plan = plan_upload(job_dir, output_dir, repo, private)
    import huggingface_hub as hub
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        raise PushFailure("HF_HUB_OFFLINE is set in the daemon's environment, so nothing can be uploaded",
                          "unset it and restart the daemon (`wanlora daemon stop`, `wanlora daemon start`)", retry=False)
    token = hub.get_token()  # HF_TOKEN, else the token file `hf auth login` wrote (huggingface_hub's own lookup)
    if not token:
        raise PushFailure("no Hugging Face token: HF_TOKEN is not set in the daemon's environment and `hf auth "
                          "login` was not run as the daemon's user",
                          "run `hf auth login` with a write token as the user the daemon runs as (or restart the "
                          "daemon with HF_TOKEN set)", retry=False)
    api = hub.HfApi(token=token)
    print(f"creating {repo} ({'private' if private else 'public'}) at {api.endpoint} if it does not exist",
          file=sys.stderr, flush=True)
    ops = [hub.CommitOperationAdd(path_in_repo=dest, path_or_fileobj=str(src)) for src, dest in plan.files]
    ops.append(hub.CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=plan.card.encode("utf-8")))
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        print(f"committing {len(ops)} files: {', '.join(op.path_in_repo for op in ops)}", file=sys.stderr, flush=True)
        info = api.create_commit(repo, operations=ops, repo_type="model",
                                 commit_message=f"wanlora: {Path(job_dir).name} final LoRA pair"
                                 + (f" (step {plan.step})" if plan.step else ""))
    except HfHubHTTPError as e:
        raise http_failure(e, repo) from None
    return {"ok": True, "url": str(url), "commit": info.oid, "files": [op.path_in_repo for op in ops]}


def http_failure(e: Exception, repo: str) -> PushFailure:
    """An HTTP error from the Hub as a failure: auth and bad requests are final, the rest is retried."""
    resp = getattr(e, "response", None)
    code = int(getattr(resp, "status_code", 0) or 0)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    owner = repo.split("/")[0]
    if code == 401:
        return PushFailure(f"the Hub refused the token (401): {first}",
                           "set a valid write token (HF_TOKEN for the daemon, or `hf auth login`)", retry=False)
    if code == 403:
        return PushFailure(f"the token may not write to {repo} (403): {first}",
                           f"use a token with write access to {owner!r} (a fine-grained token needs write on that "
                           "namespace), or upload elsewhere: `wanlora push JOB --repo yourname/name`", retry=False)
    if code in (400, 404, 409, 422):
        return PushFailure(f"the Hub refused the upload ({code}): {first}",
                           "check the repo id; `wanlora push JOB --repo owner/name` uploads to another", retry=False)
    return PushFailure(f"the Hub answered {code or 'an error'}: {first}", "", retry=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m wanlora.daemon.hub_push``: one attempt; the result goes to ``--result`` as JSON."""
    ap = argparse.ArgumentParser(prog="python -m wanlora.daemon.hub_push")
    ap.add_argument("--repo", required=True)
    vis = ap.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=True)
    vis.add_argument("--public", dest="private", action="store_false")
    ap.add_argument("--job-dir", required=True, type=Path)
    ap.add_argument("--output-dir", required=True, type=Path)
    ap.add_argument("--result", required=True, type=Path)
    a = ap.parse_args(argv)
    faults.gate("push-start")  # tests only: look at the job folder before the upload reads it
    try:
        result = upload(a.repo, a.private, a.job_dir, a.output_dir)
    except PushFailure as e:
        result = {"ok": False, "retry": e.retry, "reason": e.reason, "fix": e.fix}
    except Exception as e:  # a network error, a timeout, the Hub's odd answer: worth another try later
        result = {"ok": False, "retry": True, "reason": f"{type(e).__name__}: {str(e).strip() or 'no message'}"}
    jobdir.write_json_atomic(a.result, result)
    print(("uploaded: " + result["url"]) if result.get("ok") else f"failed: {result['reason']}", file=sys.stderr,
          flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
