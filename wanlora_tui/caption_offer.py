"""The wizard's offer to caption a dataset's uncaptioned clips (torch-free: the TUI never loads a model).

The scan step counts clips without a caption file.  With a GPU it offers "Caption them now", which runs
``wanlora caption`` as a child process for each such folder (the job is written after, so training can
only start once the captions exist); without one it prints the command to run on the GPU machine.  The
recipe, trigger word and class come from the job being built (the class from ``dop.preservation_class``).
``WANLORA_CAPTION_MODEL`` names another captioner (a local folder, for machines without the Hub).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from typing import Any

MODEL_ENV = "WANLORA_CAPTION_MODEL"


def caption_args(job: Any, recipe: str, folder: str) -> list[str]:
    """``wanlora caption`` arguments for one dataset folder of ``job`` (recipe ``custom`` → motion)."""
    rec = recipe if recipe in ("motion", "style", "character") else "motion"
    args = [folder, "--recipe", rec]
    trigger = str(getattr(job.job, "trigger_word", "") or "").strip()
    if rec == "character":
        cls = str(getattr(job.dop, "preservation_class", "") or "").strip() or "person"
        if trigger:
            args += ["--trigger", trigger]
        args += ["--class", cls]
    ds = next((d for d in job.datasets if d.folder == folder), None)
    if ds is not None and ds.caption_ext != "txt":
        args += ["--caption-ext", ds.caption_ext]
    model = os.environ.get(MODEL_ENV, "").strip()
    if model:
        args += ["--model", model]
    return args


def command_line(args: list[str]) -> str:
    """The shell line a user can paste."""
    return "wanlora caption " + " ".join(shlex.quote(a) for a in args)


def run_caption(args: list[str], on_line: Callable[[str], None]) -> int:
    """Run ``wanlora caption ARGS`` as a child, passing each output line to ``on_line``; its exit code."""
    proc = subprocess.Popen([sys.executable, "-m", "wanlora.tui.cli", "caption", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            on_line(line)
    return proc.wait()
