"""The socket protocol: one JSON object per line, each carrying ``"v": 1``.

Request:  ``{"v": 1, "cmd": "status", "job": "12"}``
Reply:    ``{"v": 1, "ok": true, ...}`` or ``{"v": 1, "ok": false, "error": "what went wrong and the fix"}``
``follow`` answers with a stream of ``{"v": 1, "event": {...}}`` lines and ends with ``{"v": 1, "ok": true,
"end": true, "state": ...}``.  A version bump means an incompatible change; both sides say so clearly.

Each command has a typed request here (:class:`Ping` … :class:`Push`): :mod:`daemon.client` builds one and
sends :meth:`Request.to_wire`; the daemon turns each line back into one with :func:`parse_request`, which
refuses an unknown command or a field of the wrong type with a message naming it.  Fields a request does
not know are ignored, so an older or newer client of the same version still talks to the daemon.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, ClassVar

VERSION = 1
SID_FORMAT = "submission_id must be 32 lowercase hex digits (uuid4().hex)"
MAX_LINE = 64 * 1024 * 1024  # a submit carries a job file (≤ 50 MB is already refused by intake)

COMMANDS = (
    "ping", "submit", "submission", "list", "status", "follow", "cancel", "pause", "resume", "retry", "remove",
    "save-now", "sample-now", "priority", "shutdown", "edit", "push",
)
JOB_COMMANDS = ("status", "follow", "cancel", "pause", "resume", "retry", "remove", "save-now", "sample-now",
                "priority", "edit", "push")


class ProtocolError(Exception):
    """A malformed or incompatible message."""


class MalformedRequest(ProtocolError):
    """A request whose fields are missing or of the wrong type (the message names the field)."""


def encode(msg: dict[str, Any]) -> bytes:
    return (json.dumps({"v": VERSION, **msg}, separators=(",", ":"), default=str) + "\n").encode()


def decode(line: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(f"not a JSON line: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    v = msg.get("v")
    if v != VERSION:
        raise ProtocolError(f"protocol version {v!r} is not supported (this side speaks v{VERSION}); "
                            "run the same wanlora version for the daemon and the command (`wanlora daemon stop` "
                            "then `wanlora daemon start` after an upgrade)")
    return msg


def normalize_cmd(cmd: Any) -> str:
    """``save_now`` and ``save-now`` both name the same command."""
    if not isinstance(cmd, str):
        raise ProtocolError("'cmd' must be a string")
    c = cmd.strip().lower().replace("_", "-")
    if c not in COMMANDS:
        raise ProtocolError(f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}")
    return c


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def error(message: str, **fields: Any) -> dict[str, Any]:
    return {"ok": False, "error": message, **fields}


# ---------------------------------------------------------------------------------------------- typed requests
@dataclass(frozen=True)
class Request:
    """One command as sent on the wire: ``{"cmd": CMD, field: value, ...}`` (fields that are None are left out)."""

    CMD: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        return {"cmd": self.CMD, **{f.name: getattr(self, f.name) for f in fields(self)
                                    if getattr(self, f.name) is not None}}


@dataclass(frozen=True)
class Ping(Request):
    CMD: ClassVar[str] = "ping"


@dataclass(frozen=True)
class ListJobs(Request):
    CMD: ClassVar[str] = "list"


@dataclass(frozen=True)
class Shutdown(Request):
    CMD: ClassVar[str] = "shutdown"


@dataclass(frozen=True)
class Submit(Request):
    """Queue a job file exactly once: the daemon de-duplicates by ``submission_id``."""

    CMD: ClassVar[str] = "submit"
    text: str
    filename: str = "job.toml"
    submission_id: str | None = None


@dataclass(frozen=True)
class Submission(Request):
    """What became of a submission id."""

    CMD: ClassVar[str] = "submission"
    submission_id: str


@dataclass(frozen=True)
class JobRequest(Request):
    """A command about one job, named by id or by name."""

    job: str


@dataclass(frozen=True)
class Status(JobRequest):
    CMD: ClassVar[str] = "status"


@dataclass(frozen=True)
class Follow(JobRequest):
    CMD: ClassVar[str] = "follow"
    from_start: bool = True


@dataclass(frozen=True)
class Cancel(JobRequest):
    CMD: ClassVar[str] = "cancel"


@dataclass(frozen=True)
class Pause(JobRequest):
    CMD: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume(JobRequest):
    CMD: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Retry(JobRequest):
    CMD: ClassVar[str] = "retry"


@dataclass(frozen=True)
class Remove(JobRequest):
    CMD: ClassVar[str] = "remove"


@dataclass(frozen=True)
class SaveNow(JobRequest):
    CMD: ClassVar[str] = "save-now"


@dataclass(frozen=True)
class SampleNow(JobRequest):
    CMD: ClassVar[str] = "sample-now"


@dataclass(frozen=True)
class Priority(JobRequest):
    """``priority``: an integer (higher starts first), its digits as a string, or ``"top"``."""

    CMD: ClassVar[str] = "priority"
    priority: int | str = ""


@dataclass(frozen=True)
class Edit(JobRequest):
    """Replace a not-running job's job.toml with ``text`` (checked as intake checks a new job)."""

    CMD: ClassVar[str] = "edit"
    text: str = ""


@dataclass(frozen=True)
class Push(JobRequest):
    """Upload a finished job's LoRA pair to the Hub (again); None: the job file's own settings."""

    CMD: ClassVar[str] = "push"
    repo: str | None = None
    private: bool | None = None


REQUESTS: dict[str, type[Request]] = {r.CMD: r for r in (
    Ping, Submit, Submission, ListJobs, Status, Follow, Cancel, Pause, Resume, Retry, Remove, SaveNow, SampleNow,
    Priority, Shutdown, Edit, Push)}
assert tuple(REQUESTS) == COMMANDS and all(issubclass(REQUESTS[c], JobRequest) for c in JOB_COMMANDS)


def _text(msg: dict[str, Any], key: str, missing: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise MalformedRequest(missing)
    return value


def _job(msg: dict[str, Any]) -> str:
    ref = msg.get("job")
    if isinstance(ref, bool) or not isinstance(ref, str | int) or str(ref).strip() == "":
        raise MalformedRequest("which job? give its id (see `wanlora status`)")
    return str(ref).strip()


def _job_fields(cmd: str, msg: dict[str, Any]) -> dict[str, Any]:
    """The fields past ``job`` of a job command, checked for type (their values are the daemon's to judge)."""
    if cmd == "follow":
        return {"from_start": bool(msg.get("from_start", True))}
    if cmd == "edit":
        text = msg.get("text", "")
        if not isinstance(text, str):
            raise MalformedRequest("edit needs the new job file's text")
        return {"text": text}
    if cmd == "priority":
        value = msg.get("priority")
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise MalformedRequest("priority must be an integer (higher starts first) or 'top'")
        return {"priority": value}
    if cmd == "push":
        repo, private = msg.get("repo") or None, msg.get("private")
        if repo is not None and not isinstance(repo, str):
            raise MalformedRequest("push: 'repo' must be a Hub repo id like user/name")
        return {"repo": repo, "private": private if isinstance(private, bool) else None}
    return {}


def parse_request(msg: dict[str, Any]) -> Request:
    """A decoded line as its typed request; :class:`ProtocolError` naming what is wrong with it."""
    cmd = normalize_cmd(msg.get("cmd"))
    kind = REQUESTS[cmd]
    if issubclass(kind, JobRequest):
        return kind(job=_job(msg), **_job_fields(cmd, msg))
    if kind is Submit:
        text = _text(msg, "text", "submit needs the job file's text")
        sid = msg.get("submission_id") or None
        if sid is not None and not isinstance(sid, str):
            raise MalformedRequest(SID_FORMAT)
        return Submit(text, str(msg.get("filename") or "job.toml"), sid)
    if kind is Submission:
        sid = msg.get("submission_id")
        if not isinstance(sid, str) or not sid:
            raise MalformedRequest("submission needs submission_id")
        return Submission(sid)
    return kind()


def build(cmd: str, **args: Any) -> Request:
    """The typed request for ``cmd`` with these arguments (the client's side of :func:`parse_request`)."""
    return parse_request({"cmd": cmd, **args})
