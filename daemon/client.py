"""Talking to the daemon from the CLI and the TUI: one request, one reply (or a stream for ``follow``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wanlora.daemon import protocol
from wanlora.daemon.home import Home

DOWN_MESSAGE = "daemon not running — start it with `wanlora daemon start`"


class DaemonDown(Exception):
    """No daemon answers on this home's socket.  ``sent``: the request had gone out (it may have been acted on)."""

    def __init__(self, home: Path | None = None, detail: str = "", sent: bool = False) -> None:
        self.home = home
        self.sent = sent
        where = f" (home {home})" if home else ""
        super().__init__(f"{DOWN_MESSAGE}{where}" + (f" [{detail}]" if detail else ""))


class NotSpooled(Exception):
    """The daemon is down and the job could not be written into the spool either (the message names the
    folder and its free space: a full disk is the usual cause)."""


class DaemonError(Exception):
    """The daemon answered ``ok: false``; the message is meant for the user."""

    def __init__(self, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reply = reply or {}


def _home(home: Path | Home | str | None) -> Home:
    return home if isinstance(home, Home) else Home.resolve(home)


def connect(home: Path | Home | str | None = None, timeout: float | None = 30.0) -> socket.socket:
    h = _home(home)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(h.sock))
    except (FileNotFoundError, ConnectionRefusedError) as e:
        s.close()
        raise DaemonDown(h.root) from e
    except OSError as e:
        s.close()
        raise DaemonDown(h.root, e.strerror or str(e)) from e
    return s


def _lines(s: socket.socket) -> Iterator[dict[str, Any]]:
    f = s.makefile("rb")
    while True:
        line = f.readline(protocol.MAX_LINE + 1)
        if not line:
            return
        yield protocol.decode(line)


def typed(cmd: str | protocol.Request, **args: Any) -> protocol.Request:
    """The typed request (daemon.protocol) for a command given by name and arguments; a malformed one is a
    :class:`DaemonError` with the daemon's own message, as if it had refused it."""
    if isinstance(cmd, protocol.Request):
        return cmd
    try:
        return protocol.build(cmd, **args)
    except protocol.ProtocolError as e:
        raise DaemonError(str(e)) from None


def request(home: Path | Home | str | None, cmd: str | protocol.Request, *, timeout: float | None = 30.0,
            **args: Any) -> dict[str, Any]:
    """Send one command (a typed request, or its name and arguments) and return the reply;
    :class:`DaemonDown` / :class:`DaemonError` on failure."""
    req = typed(cmd, **args)
    h = _home(home)
    with connect(h, timeout) as s:
        try:
            s.sendall(protocol.encode(req.to_wire()))
            for reply in _lines(s):
                if "event" in reply:
                    continue
                if not reply.get("ok"):
                    raise DaemonError(str(reply.get("error") or "the daemon refused the command"), reply)
                return reply
        except (ConnectionResetError, BrokenPipeError) as e:
            raise DaemonDown(h.root, "the connection was closed", sent=True) from e
        except TimeoutError as e:
            raise DaemonError(f"the daemon did not answer {req.CMD!r} within {timeout:g} s") from e
    raise DaemonDown(h.root, "the daemon closed the connection without answering", sent=True)


SUBMIT_TIMEOUT_S = 900.0  # intake checks the dataset; the daemon answers "pending" itself before this


@dataclass
class Submitted:
    """What became of one ``submit``: a job id, or a spool file the daemon queues when it (re)starts."""

    submission_id: str
    job_id: int | None = None
    name: str = ""
    warnings: list[str] = field(default_factory=list)
    spooled: Path | None = None
    note: str = ""  # what happened, for the user, when it was not a plain answer


def find(home: Path | Home | str | None, submission_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """What became of a submission: ``{"found": "queued"|"pending"|"rejected"|"unknown", ...}``.

    Asks the daemon; without one, looks on disk in the order files move (spool/new → spool/cur →
    queue.db → spool/rejected), so a daemon restarting meanwhile cannot make it miss the job.
    """
    from wanlora.daemon.queue import Queue
    from wanlora.daemon.spool import find_rejection, find_submission

    h = _home(home)
    try:
        return request(h, protocol.Submission(submission_id), timeout=timeout)
    except (DaemonDown, DaemonError, protocol.ProtocolError):
        pass
    where = find_submission(h, submission_id)
    if where is not None:
        return {"found": "pending", "spooled": str(where[1])}
    if h.db.exists():
        try:
            with Queue(h.db, readonly=True) as q:
                row = q.by_submission(submission_id)
        except Exception:
            row = None
        if row is not None:
            return {"found": "queued", "id": row.id, "name": row.name}
    err = find_rejection(h, submission_id)
    if err is not None:
        return {"found": "rejected", "rejected": str(err),
                "error": err.read_text(errors="replace").split("\n", 1)[-1].strip()}
    return {"found": "unknown"}


def _spool(h: Home, text: str, filename: str, sid: str) -> Path:
    from wanlora.daemon.diskspace import describe_free
    from wanlora.daemon.spool import submit_file

    try:
        return submit_file(h, text, name=filename, submission_id=sid)
    except OSError as e:
        raise NotSpooled(f"the daemon is not running, and the job could not be written into {h.spool} "
                         f"({e.strerror or e}; {describe_free(h.spool)}); free space there and submit again") from None


def submit(home: Path | Home | str | None, text: str, filename: str = "job.toml", *,
           submission_id: str | None = None, timeout: float = SUBMIT_TIMEOUT_S) -> Submitted:
    """Queue a job exactly once: over the socket, else through the spool.

    A dropped connection after the request went out is ambiguous (the daemon may have queued the job and
    died before answering), so the client asks by submission id before spooling; and it spools under the
    same id, so even a wrong guess is de-duplicated by the daemon.  Raises :class:`DaemonError` for a refusal,
    :class:`NotSpooled` when the spool cannot be written (a full disk).
    """
    from wanlora.daemon.spool import new_submission_id

    h = _home(home)
    sid = submission_id or new_submission_id()
    try:
        reply = request(h, protocol.Submit(text, filename, sid), timeout=timeout)
    except DaemonDown as e:
        if not e.sent:
            return Submitted(sid, spooled=_spool(h, text, filename, sid))
        found = find(h, sid)
        state = found.get("found")
        if state == "queued":
            return Submitted(sid, job_id=int(found["id"]), name=str(found.get("name", "")),
                             note="the daemon closed the connection before answering, but the job was queued")
        if state == "pending":
            return Submitted(sid, spooled=Path(str(found["spooled"])),
                             note="the daemon closed the connection before answering; the job is in the spool "
                                  "and is queued when the daemon runs again")
        if state == "rejected":
            raise DaemonError(f"rejected: {found.get('error')}", found) from None
        return Submitted(sid, spooled=_spool(h, text, filename, sid),
                         note="the daemon closed the connection before taking the job")
    if reply.get("id") is None:
        return Submitted(sid, spooled=Path(str(reply["spooled"])) if reply.get("spooled") else None,
                         note=str(reply.get("message") or "the job is in the spool"))
    return Submitted(sid, job_id=int(reply["id"]), name=str(reply.get("name", "")),
                     warnings=list(reply.get("warnings") or []))


def follow(home: Path | Home | str | None, job: int | str, *, from_start: bool = True) -> Iterator[dict[str, Any]]:
    """Yield the job's events as they are written, then a final ``{"end": True, "state": ...}``."""
    h = _home(home)
    with connect(h, timeout=None) as s:
        s.sendall(protocol.encode(typed("follow", job=str(job), from_start=from_start).to_wire()))
        for msg in _lines(s):
            if "event" in msg:
                yield msg["event"]
                continue
            if not msg.get("ok"):
                raise DaemonError(str(msg.get("error")), msg)
            yield {"end": True, **msg}
            return


def running(home: Path | Home | str | None = None) -> bool:
    try:
        request(home, protocol.Ping(), timeout=5)
    except (DaemonDown, DaemonError, protocol.ProtocolError):
        return False
    return True
