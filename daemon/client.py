"""Talking to the daemon from the CLI and the TUI: one request, one reply (or a stream for ``follow``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wanlora.daemon import protocol
from wanlora.daemon.home import Home

DOWN_MESSAGE = "daemon not running — start it with `wanlora daemon start`"


class DaemonDown(Exception):
    """No daemon answers on this home's socket."""

    def __init__(self, home: Path | None = None, detail: str = "") -> None:
        self.home = home
        where = f" (home {home})" if home else ""
        super().__init__(f"{DOWN_MESSAGE}{where}" + (f" [{detail}]" if detail else ""))


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


def request(home: Path | Home | str | None, cmd: str, *, timeout: float | None = 30.0, **args: Any) -> dict[str, Any]:
    """Send one command and return the reply; :class:`DaemonDown` / :class:`DaemonError` on failure."""
    h = _home(home)
    with connect(h, timeout) as s:
        try:
            s.sendall(protocol.encode({"cmd": cmd, **args}))
            for reply in _lines(s):
                if "event" in reply:
                    continue
                if not reply.get("ok"):
                    raise DaemonError(str(reply.get("error") or "the daemon refused the command"), reply)
                return reply
        except (ConnectionResetError, BrokenPipeError) as e:
            raise DaemonDown(h.root, "the connection was closed") from e
        except TimeoutError as e:
            raise DaemonError(f"the daemon did not answer {cmd!r} within {timeout:g} s") from e
    raise DaemonDown(h.root, "the daemon closed the connection without answering")


def follow(home: Path | Home | str | None, job: int | str, *, from_start: bool = True) -> Iterator[dict[str, Any]]:
    """Yield the job's events as they are written, then a final ``{"end": True, "state": ...}``."""
    h = _home(home)
    with connect(h, timeout=None) as s:
        s.sendall(protocol.encode({"cmd": "follow", "job": str(job), "from_start": from_start}))
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
        request(home, "ping", timeout=5)
    except (DaemonDown, DaemonError, protocol.ProtocolError):
        return False
    return True
