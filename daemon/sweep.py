"""Removing the temp files a killed writer leaves behind (``.NAME_*.safetensors.PID.tmp``, ``.status.json.PID.tmp``).

Every atomic write in wanlora goes through ``.<name>.<pid>[.<tid>].tmp[.ext]`` then a rename, so a SIGKILL
between the two leaves one such file; a few GB of half-written LoRA pairs fill a small disk.  A resumable
state is built in ``state/.tmp_step_<step>_<pid>/`` and renamed the same way; a trainer that died mid-save
(ENOSPC is the usual cause) leaves that folder, and on a full disk the trainer's own clean-up, after its next
successful save, never comes: the daemon removes it too.  The daemon
sweeps a job's folders when it starts and after the job's trainer exits; a file whose writer (the pid in its
name) is still alive is left alone.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from wanlora.daemon.adopt import pid_alive
from wanlora.engine.config import jobdir

TEMP_RE = re.compile(r"^\..+\.(?P<pid>\d+)(\.\d+)?\.tmp(\.[A-Za-z0-9]+)?$")
SUBDIRS = ("", "checkpoints", "samples")
STATE_TMP_RE = re.compile(r"^\.tmp_step_\d+_(?P<pid>\d+)$")  # engine.train.state.save_state's folder


def temp_files(folder: Path) -> list[Path]:
    """Leftover temp files directly in ``folder`` whose writer is gone."""
    out: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return out
    for p in entries:
        m = TEMP_RE.match(p.name)
        if m and p.is_file() and not p.is_symlink() and not pid_alive(int(m.group("pid"))):
            out.append(p)
    return sorted(out)


def sweep_job(job_dir: Path, output_dir: str | Path | None = None) -> list[Path]:
    """Delete leftover temp files in the job folder, its checkpoints/ and samples/, and its output_dir."""
    folders = [job_dir / s if s else job_dir for s in SUBDIRS]
    if output_dir:
        folders.append(Path(output_dir))
    removed: list[Path] = []
    for folder in dict.fromkeys(folders):
        for p in temp_files(folder):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    for p in half_saved_states(job_dir):
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def half_saved_states(job_dir: Path) -> list[Path]:
    """``state/.tmp_step_*_PID`` folders whose saving trainer is gone."""
    try:
        entries = list((job_dir / jobdir.STATE_DIR).iterdir())
    except OSError:
        return []
    return sorted(p for p in entries if (m := STATE_TMP_RE.match(p.name)) and p.is_dir() and not p.is_symlink()
                  and not pid_alive(int(m.group("pid"))))
