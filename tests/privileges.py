"""Make file modes bite when the tests run as root (CI does): drop root's permission-override capabilities.

Root reads any folder because of CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so a test that chmods a folder to
0 would see nothing fail.  :func:`run_owner_only` runs a snippet in a child process that first clears those
two capabilities (capset(2) through ctypes; nothing to install), so a mode-0 folder is unreadable for real
while everything else (the repository, pytest's tmp folders, all owned by root) stays readable.  As a normal
user the drop is a no-op and the permissions apply anyway.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
_VERSION_3 = 0x20080522
REPO = Path(__file__).resolve().parents[1]


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_dac_override() -> None:
    """Clear CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from this process (raises if the kernel refuses)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    hdr, data = _Header(_VERSION_3, 0), (_Data * 2)()
    if libc.capget(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    mask = ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
    for field in ("effective", "permitted", "inheritable"):
        setattr(data[0], field, getattr(data[0], field) & mask)
    if libc.capset(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def run_owner_only(code: str) -> str:
    """Run ``code`` (Python) in a child without root's override capabilities; returns its stdout."""
    prelude = "from tests.privileges import drop_dac_override; drop_dac_override()\n"
    done = subprocess.run([sys.executable, "-c", prelude + code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
