"""A command's JOB argument: a job file (.toml, presets resolved) or a job folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def load_job_arg(arg: str, *, vram_gib: float | None = None) -> Any | None:
    """The job ``arg`` names, or None after printing why it cannot be read (the command then exits 1).

    ``vram_gib`` stands in for the detected GPU memory, so ``vram_tier = "auto"`` resolves for that card
    (``wanlora trial --vram-gib 24`` tries the 24 GB tier's settings, not the real device's)."""
    from wanlora.engine.config.findings import JobError
    from wanlora.engine.config.io import load_job
    from wanlora.engine.config.presets import resolve_file

    path = Path(arg).expanduser()
    try:
        return load_job(path / "job.toml") if path.is_dir() else resolve_file(path, detected_vram_gb=vram_gib).job
    except (JobError, OSError) as e:
        print(f"cannot read {path}: {e}", file=sys.stderr)
        return None
