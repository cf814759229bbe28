"""The daemon's home folder (SPEC §6) and the one-daemon-per-home lock.

Everything the daemon owns lives under one folder so that a rented container can keep it on its
persistent volume (``WANLORA_HOME=/workspace/wanlora``): the spool (intake), one folder per job, the
queue database, the control socket and the singleton lock.  The folder is owner-only (0700) because the
socket in it accepts commands that start processes.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from wanlora.daemon.trust import untrusted
from wanlora.engine.config.paths import wanlora_home

# File systems on which SQLite's WAL (shared memory) and inotify do not work reliably.
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "ceph",
              "glusterfs", "fuse.glusterfs", "lustre")
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


class HomeError(Exception):
    """A problem with the home folder the user must fix (printed as is)."""


class AlreadyRunning(HomeError):
    """Another daemon holds ``daemon.lock`` for this home."""

    def __init__(self, home: Path, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"a wanlora daemon is already running for {home} ({who} holds {home / 'daemon.lock'}); "
                         "use `wanlora daemon status` or `wanlora daemon stop`")


@dataclass(frozen=True)
class Home:
    """Paths inside one wanlora home; :meth:`ensure` creates them."""

    root: Path

    @classmethod
    def resolve(cls, home: Path | str | None = None) -> Home:
        return cls(Path(home).expanduser().absolute() if home else wanlora_home().expanduser().absolute())

    # ---- layout
    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def spool_tmp(self) -> Path:
        return self.spool / "tmp"

    @property
    def spool_new(self) -> Path:
        return self.spool / "new"

    @property
    def spool_cur(self) -> Path:
        """Files the daemon has claimed (renamed out of new/) and is validating right now."""
        return self.spool / "cur"

    @property
    def spool_rejected(self) -> Path:
        return self.spool / "rejected"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def job_dir(self, job_id: int | str) -> Path:
        return self.jobs / str(int(job_id))

    @property
    def db(self) -> Path:
        return self.root / "queue.db"

    @property
    def sock(self) -> Path:
        return self.root / "daemon.sock"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    def ensure(self) -> None:
        """Create the layout; the home itself becomes owner-only (0700).

        A home that exists already must be ours and not writable by others (:func:`check_owned`): the
        daemon runs its config.toml callback and the jobs in it, so adopting another user's folder would
        run their commands as us.
        """
        self.check_trusted()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for d in (self.spool, self.spool_tmp, self.spool_new, self.spool_cur, self.spool_rejected, self.jobs):
            d.mkdir(mode=0o700, exist_ok=True)
        for d in (self.config, self.spool, self.jobs):
            if d.exists() or d.is_symlink():
                check_owned(d, "daemon config" if d == self.config else "folder")

    def check_trusted(self) -> None:
        """HomeError unless the home (when it exists) is ours and not writable by others; creates nothing."""
        if self.root.exists() or self.root.is_symlink():
            check_owned(self.root, "home folder")

    def ensure_spool(self) -> None:
        """Just enough for a writer to drop a job in (no daemon needed)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (self.spool, self.spool_tmp, self.spool_new):
            d.mkdir(mode=0o700, exist_ok=True)

    def check_socket_path(self) -> None:
        if len(os.fsencode(self.sock)) > SOCKET_PATH_MAX:
            raise HomeError(f"the socket path {self.sock} is longer than {SOCKET_PATH_MAX} bytes, which Unix "
                            "sockets cannot use; set WANLORA_HOME to a shorter folder")


def check_owned(path: Path, what: str) -> None:
    """Refuse (HomeError with the fix) a path not owned by our uid or writable by group/others."""
    try:
        st = os.stat(path)  # follows a link: what matters is the folder/file actually used
    except FileNotFoundError:
        return
    except OSError as e:
        raise HomeError(f"the {what} {path} cannot be checked ({e.strerror})") from None
    bad = untrusted(st)
    if bad is not None:
        raise HomeError(bad.refusal(
            f"the {what} {path}", runs="the daemon will not adopt another user's files or run their config.toml "
            "callback", fix_owner=f"use your own home (WANLORA_HOME=/path/you/own), or if it is yours: chown -R "
            f"{bad.me} {path}", could_change="the jobs or the callback the daemon runs", fix_mode=f"chmod go-w {path}"))


def filesystem_type(path: Path) -> str | None:
    """The type of the mount holding ``path`` (longest matching mount point in /proc/mounts)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(Path(path).resolve())
    best, fstype = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, fstype = mnt, parts[2]
    return fstype


def network_fs_warning(path: Path) -> str | None:
    """A warning when ``path`` is on a network file system (SQLite WAL needs a local disk)."""
    fs = filesystem_type(path)
    if fs and (fs in NETWORK_FS or fs.startswith("nfs")):
        return (f"{path} is on a network file system ({fs}); SQLite's WAL and inotify do not work reliably there. "
                "Keep WANLORA_HOME on a local disk (e.g. /workspace on RunPod, not a network share).")
    return None


class DaemonLock:
    """``flock`` on ``daemon.lock``: the kernel drops it when the daemon dies, so no stale pid files."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`AlreadyRunning` naming the holder's pid."""
        fd = os.open(self.home.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AlreadyRunning(self.home.root, lock_holder_pid(self.home)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lock_holder_pid(home: Home) -> int | None:
    """The pid written into ``daemon.lock`` when the lock is held right now, else None."""
    try:
        fd = os.open(home.lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.read(fd, 64).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
