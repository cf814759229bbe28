"""``wanlora scan`` under a time limit: the folder is listed and each file read in a child process.

The scan already reads only regular files, with a cap on captions (engine.data.scan); what is left is a
file that takes for ever: a clip on a hung network mount, a decoder that never finishes.  In-process that
hangs the command and the terminal for good.  Here a child process does the reading and the parent waits
at most ``limit_s`` for each file: past it the child is killed (or abandoned, if the kernel holds it in an
uninterruptible read), the file is named as unreadable with the reason, and a new child goes on with the
rest.  Two files in a row past the limit mean the disk itself is hung: the rest is named, not read.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import time
from pathlib import Path
from typing import Any

from wanlora.engine.data import scan as scanning

_LEN = struct.Struct("!Q")
GONE = "gone"  # next(): the child exited (or died) before sending the next message


def _child(fd: int, folder: str | Path, caption_ext: str, todo: list[Path] | None) -> None:
    """In the child: the plan (when ``todo`` is None), then one ClipInfo per file, each as one framed pickle."""

    def send(msg: Any) -> None:
        data = pickle.dumps(msg)
        os.write(fd, _LEN.pack(len(data)) + data)

    try:
        if todo is None:
            send(("plan", scanning.folder_plan(folder, caption_ext)))
            return
        for p in todo:
            try:
                send(("item", scanning.scan_file(p, caption_ext)))
            except Exception as e:  # an unexpected failure on one file: name it, go on
                send(("item", scanning.ClipInfo(p, scanning.media_kind(p) or "video", error=f"{type(e).__name__}: {e}")))
    except scanning.ScanError as e:
        send(("scan-error", str(e)))


class _Reader:
    """A child process and the read end of its pipe; ``next(timeout)`` gives the next message or None."""

    def __init__(self, folder: str | Path, caption_ext: str, todo: list[Path] | None) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller (no atexit, no pytest teardown)
            code = 0
            try:
                os.close(r)
                _child(w, folder, caption_ext, todo)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        self.pid, self.fd, self.buf = pid, r, b""

    def next(self, timeout: float) -> Any | None:
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= _LEN.size:
                (n,) = _LEN.unpack_from(self.buf)
                if len(self.buf) >= _LEN.size + n:
                    msg = pickle.loads(self.buf[_LEN.size:_LEN.size + n])
                    self.buf = self.buf[_LEN.size + n:]
                    return msg
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None  # past the limit
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return GONE
            self.buf += chunk

    def close(self) -> None:
        """Kill the child and reap it if it dies; one stuck in the kernel is left, never waited for."""
        os.close(self.fd)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for _ in range(20):
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.01)


def scan_folder(folder: str | Path, caption_ext: str = "txt", limit_s: float = 60.0) -> scanning.FolderReport:
    """:func:`engine.data.scan.scan_folder`, with at most ``limit_s`` per file (0: no limit, in-process)."""
    if limit_s <= 0 or not hasattr(os, "fork"):
        return scanning.scan_folder(folder, caption_ext)
    reader = _Reader(folder, caption_ext, None)
    try:
        msg = reader.next(limit_s)
    finally:
        reader.close()
    if msg is None or msg == GONE:
        why = (f"listing it took longer than {limit_s:g} s (--timeout)" if msg is None
               else "the process listing it died")
        raise scanning.ScanError(f"dataset folder {Path(folder).expanduser()} could not be scanned: {why}; is the "
                                 "disk holding it hung or very slow (a network mount)?")
    if msg[0] == "scan-error":
        raise scanning.ScanError(msg[1])
    report, todo = msg[1]
    timed_out = 0
    while todo:
        reader = _Reader(folder, caption_ext, todo)
        try:
            while todo:
                msg = reader.next(limit_s)
                if msg is None or msg == GONE:
                    break
                report.items.append(msg[1])
                todo = todo[1:]
                timed_out = 0
        finally:
            reader.close()
        if not todo:
            break
        stuck, todo = todo[0], todo[1:]
        timed_out = timed_out + 1 if msg is None else 0
        kind = scanning.media_kind(stuck) or "video"
        why = (f"reading it did not finish within {limit_s:g} s (--timeout): a hung or very slow disk, or a file the "
               "decoder cannot finish; re-export it or move it out" if msg is None
               else "the process reading it died (a decoder crash); re-export it or move it out")
        report.items.append(scanning.ClipInfo(stuck, kind, error=why))
        if timed_out >= 2:  # the disk, not the file: do not spend limit_s on each of the rest
            for p in todo:
                report.items.append(scanning.ClipInfo(p, scanning.media_kind(p) or "video",
                                                      error="not read: the two files before it did not finish "
                                                            f"within {limit_s:g} s, the disk seems hung"))
            break
    return report
