"""The daemon's Unix socket: owner-only, one thread per connection, JSON lines (see :mod:`daemon.protocol`).

The socket file is 0600 inside the 0700 home, and on top of that every peer's uid is checked with
SO_PEERCRED: a process of another user is refused even if the permissions were loosened by hand.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wanlora.daemon import protocol

Send = Callable[[dict[str, Any]], None]
Handler = Callable[[dict[str, Any], Send], dict[str, Any]]


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class Server:
    def __init__(self, path: Path, handler: Handler, log: Callable[[str], None] = lambda s: None) -> None:
        self.path = Path(path)
        self.handler = handler
        self.log = log
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def start(self) -> None:
        try:  # we hold daemon.lock, so any socket file here is a dead daemon's
            self.path.unlink()
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # born 0600: no window in which another user could connect
        try:
            s.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        s.listen(64)
        self._sock = s
        self._thread = threading.Thread(target=self._accept_loop, name="wanlora-socket", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closing.is_set():
                    return
                continue
            threading.Thread(target=self._serve, args=(conn,), name="wanlora-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                uid = peer_uid(conn)
            except OSError:
                return
            if uid != os.getuid():
                self.log(f"refused a connection from uid {uid} (the daemon runs as uid {os.getuid()})")
                self._write(conn, protocol.error(f"permission denied: this daemon belongs to uid {os.getuid()}"))
                return
            f = conn.makefile("rb")
            while not self._closing.is_set():
                try:
                    line = f.readline(protocol.MAX_LINE + 1)
                except OSError:
                    return
                if not line:
                    return
                if len(line) > protocol.MAX_LINE:
                    self._write(conn, protocol.error("message too long"))
                    return
                if not line.strip():
                    continue
                try:
                    msg = protocol.decode(line)
                    reply = self.handler(msg, lambda m: self._write(conn, m, raise_=True))
                except protocol.ProtocolError as e:
                    reply = protocol.error(str(e))
                except (BrokenPipeError, ConnectionResetError):
                    return
                except Exception as e:  # a bug in one command must not take the daemon down
                    self.log(f"error handling {line[:200]!r}: {type(e).__name__}: {e}")
                    reply = protocol.error(f"internal error: {type(e).__name__}: {e}")
                if not self._write(conn, reply):
                    return

    @staticmethod
    def _write(conn: socket.socket, msg: dict[str, Any], raise_: bool = False) -> bool:
        try:
            conn.sendall(protocol.encode(msg))
        except OSError:
            if raise_:
                raise BrokenPipeError from None
            return False
        return True
