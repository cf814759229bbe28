"""Removing the temp files a killed writer leaves behind (``.NAME_*.safetensors.PID.tmp``, ``.status.json.PID.tmp``).

Every atomic write in wanlora goes through ``.<name>.<pid>[.<tid>].tmp[.ext]`` then a rename, so a SIGKILL
between the two leaves one such file; a few GB of half-written LoRA pairs fill a small disk.  The daemon
sweeps a job's folders when it starts and after the job's trainer exits; a file whose writer (the pid in its
name) is still alive is left alone.
"""

from __future__ import annotations

import re
from pathlib import Path

from wanlora.daemon.adopt import pid_alive

TEMP_RE = re.compile(r"^\..+\.(?P<pid>\d+)(\.\d+)?\.tmp(\.[A-Za-z0-9]+)?$")
SUBDIRS = ("", "checkpoints", "samples")


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
    return removed
