"""The typed requests (daemon.protocol) that the client builds and the daemon parses: the wire lines stay
exactly what they were, every command has one handler, and a malformed request gets a clear answer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from wanlora.daemon import client, protocol

SID = "0123456789abcdef0123456789abcdef"


def wire(req: protocol.Request) -> dict:
    line = protocol.encode(req.to_wire())
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return json.loads(line)


@pytest.mark.parametrize("cmd, args, expected", [
    # what the client sent before requests were typed, written out by hand
    ("ping", {}, {"v": 1, "cmd": "ping"}),
    ("list", {}, {"v": 1, "cmd": "list"}),
    ("submit", {"text": "x = 1", "filename": "a.toml", "submission_id": SID},
     {"v": 1, "cmd": "submit", "text": "x = 1", "filename": "a.toml", "submission_id": SID}),
    ("submission", {"submission_id": SID}, {"v": 1, "cmd": "submission", "submission_id": SID}),
    ("status", {"job": "12"}, {"v": 1, "cmd": "status", "job": "12"}),
    ("follow", {"job": "3", "from_start": False}, {"v": 1, "cmd": "follow", "job": "3", "from_start": False}),
    ("save_now", {"job": "my-job"}, {"v": 1, "cmd": "save-now", "job": "my-job"}),
    ("priority", {"job": "4", "priority": "top"}, {"v": 1, "cmd": "priority", "job": "4", "priority": "top"}),
    ("edit", {"job": "4", "text": "[job]"}, {"v": 1, "cmd": "edit", "job": "4", "text": "[job]"}),
    ("push", {"job": "4"}, {"v": 1, "cmd": "push", "job": "4"}),
    ("push", {"job": "4", "repo": "me/lora", "private": False},
     {"v": 1, "cmd": "push", "job": "4", "repo": "me/lora", "private": False}),
    ("shutdown", {}, {"v": 1, "cmd": "shutdown"}),
])
def test_client_lines_are_the_same_json_as_before(cmd: str, args: dict, expected: dict) -> None:
    req = client.typed(cmd, **args)
    assert wire(req) == expected
    assert protocol.parse_request(protocol.decode(protocol.encode(req.to_wire()))) == req  # the daemon's view


def test_every_command_has_a_typed_request_and_one_handler(tmp_path: Path) -> None:
    from wanlora.daemon.home import Home
    from wanlora.daemon.supervisor import Daemon

    assert set(protocol.REQUESTS) == set(protocol.COMMANDS)
    d = Daemon(Home.resolve(tmp_path / "h"), log=io.StringIO())
    assert set(d.commands.table) == set(protocol.COMMANDS)


@pytest.mark.parametrize("msg, error", [
    ({"cmd": "explode"}, "unknown command 'explode'"),
    ({"cmd": 7}, "'cmd' must be a string"),
    ({"cmd": "cancel"}, "which job?"),
    ({"cmd": "cancel", "job": ["1"]}, "which job?"),
    ({"cmd": "submit"}, "submit needs the job file's text"),
    ({"cmd": "submit", "text": "x", "submission_id": 5}, "submission_id must be 32 lowercase hex"),
    ({"cmd": "submission"}, "submission needs submission_id"),
    ({"cmd": "edit", "job": "1", "text": 3}, "edit needs the new job file's text"),
    ({"cmd": "priority", "job": "1", "priority": 1.5}, "priority must be an integer"),
    ({"cmd": "priority", "job": "1"}, "priority must be an integer"),
    ({"cmd": "push", "job": "1", "repo": 9}, "'repo' must be a Hub repo id"),
])
def test_a_malformed_request_is_refused_with_a_message_naming_what_is_wrong(msg: dict, error: str,
                                                                              tmp_path: Path) -> None:
    from wanlora.daemon.home import Home
    from wanlora.daemon.supervisor import Daemon

    with pytest.raises(protocol.ProtocolError, match=error.replace("?", r"\?")):
        protocol.parse_request(msg)
    reply = Daemon(Home.resolve(tmp_path / "h"), log=io.StringIO()).handle(msg, lambda m: None)
    assert reply["ok"] is False and error in reply["error"]  # an answer, not a traceback
    with pytest.raises(client.DaemonError, match=error.replace("?", r"\?")):  # the client says the same
        client.request(tmp_path / "nowhere", msg["cmd"], **{k: v for k, v in msg.items() if k != "cmd"})


def test_unknown_fields_are_ignored_so_other_clients_of_v1_still_work() -> None:
    assert protocol.parse_request({"v": 1, "cmd": "pause", "job": 7, "note": "x"}) == protocol.Pause(job="7")
