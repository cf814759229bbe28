"""Whether the daemon may trust a file or folder: it must belong to the daemon's uid and be writable by
nobody else.  The home, its spool and jobs folders, and config.toml (whose callback the daemon runs) are all
checked by :func:`untrusted`; each caller words the refusal for its own file (daemon.home, daemon.config).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Untrusted:
    """Why a path is not trusted: another user owns it (``owner`` set), or others can write it."""

    me: str  # the user the daemon runs as
    uid: int
    owner: str | None  # the other user who owns it; None: ours, but writable by others
    mode: str  # e.g. -rw-rw-rw-, for the message

    def refusal(self, subject: str, *, runs: str, fix_owner: str, could_change: str, fix_mode: str) -> str:
        """The one wording of every refusal; ``subject`` names the path, ``runs`` says what trusting another
        user's file would let happen, ``could_change`` what others could change; the fixes are the caller's."""
        if self.owner is not None:
            return (f"{subject} belongs to {self.owner}, not to {self.me} (uid {self.uid}) who runs the daemon; "
                    f"{runs}. Fix: {fix_owner}")
        return (f"{subject} is writable by other users (mode {self.mode}), so they could change {could_change}; "
                f"fix with: {fix_mode}")


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def writable_by_others(st: os.stat_result) -> bool:
    """World-writable, or group-writable by a group other than the owner's own private group.

    (umask 002 with one group per user, the Debian/Ubuntu default, gives 0664 files only their owner can
    change: those are fine.)
    """
    import grp
    import pwd

    if st.st_mode & 0o002:
        return True
    if not st.st_mode & 0o020:
        return False
    try:
        owner = pwd.getpwuid(st.st_uid)
        group = grp.getgrgid(st.st_gid)
    except KeyError:
        return True
    return not (st.st_gid == owner.pw_gid and set(group.gr_mem) <= {owner.pw_name})


def untrusted(st: os.stat_result) -> Untrusted | None:
    """None when ``st`` (a stat of the path actually used) is ours and not writable by others."""
    uid = os.geteuid()
    mode = stat.filemode(st.st_mode)
    if st.st_uid != uid:
        return Untrusted(user_name(uid), uid, user_name(st.st_uid), mode)
    if writable_by_others(st):
        return Untrusted(user_name(uid), uid, None, mode)
    return None
