"""The socket protocol: one JSON object per line, each carrying ``"v": 1``.

Request:  ``{"v": 1, "cmd": "status", "job": "12"}``
Reply:    ``{"v": 1, "ok": true, ...}`` or ``{"v": 1, "ok": false, "error": "what went wrong and the fix"}``
``follow`` answers with a stream of ``{"v": 1, "event": {...}}`` lines and ends with ``{"v": 1, "ok": true,
"end": true, "state": ...}``.  A version bump means an incompatible change; both sides say so clearly.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = 1
MAX_LINE = 64 * 1024 * 1024  # a submit carries a job file (≤ 50 MB is already refused by intake)

COMMANDS = (
    "ping", "submit", "submission", "list", "status", "follow", "cancel", "pause", "resume", "retry", "remove",
    "save-now", "sample-now", "priority", "shutdown", "edit", "push",
)
JOB_COMMANDS = ("status", "follow", "cancel", "pause", "resume", "retry", "remove", "save-now", "sample-now",
                "priority", "edit", "push")


class ProtocolError(Exception):
    """A malformed or incompatible message."""


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
