"""Human progress lines from the trainer's events, and the noise filter for ``train.log``.

``logs -f``, ``wanlora demo`` and the job view all say the same thing about a step: where it is, the loss,
the speed and the trainer's own ETA.  ``train.log`` also holds what libraries print while loading (tqdm
bars, a transformers note about torchvision); :func:`is_noise` drops those (``logs --raw`` shows them).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wanlora.engine.config import jobdir

NOISE = [
    re.compile(r"\d+%\|"),  # a tqdm bar: " 45%|████▌     | 9/20 [00:01<00:02, 4.1it/s]"
    re.compile(r"\[\d+:\d+(<|\s)[^\]]*(it/s|s/it)\]"),
    re.compile(r"^(Writing|Loading) (model shards|checkpoint shards|pipeline components)"),
    re.compile(r"requires torchvision \(not installed\)"),
    re.compile(r"^\s*warnings\.warn\("),
]


def quiet_libraries() -> None:
    """Before loading models in a command: no tqdm load bars or advisory warnings from the HF libraries.

    Our own progress lines (and the denoising bar ``wanlora sample`` asks for) still show.
    """
    import os

    for var, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("DIFFUSERS_VERBOSITY", "error"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(var, value)
    try:
        import diffusers.utils.logging as dl
        import transformers.utils.logging as tl

        dl.disable_progress_bar()
        tl.disable_progress_bar()
    except Exception:  # an older library without these: only the bars stay
        pass


def is_noise(line: str) -> bool:
    """A library's load bar or a known harmless warning: not worth a newcomer's attention."""
    return any(p.search(line) for p in NOISE)


def eta_text(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return "-"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def speed_text(s_per_step: Any) -> str:
    if not isinstance(s_per_step, int | float) or s_per_step <= 0:
        return "- s/step"
    return f"{s_per_step:.3g} s/step" if s_per_step < 100 else f"{s_per_step:.0f} s/step"


def step_line(ev: dict[str, Any]) -> str:
    """``step 12/60  loss 0.1234  high_noise  2.31 s/step  ETA 1m50s``."""
    loss = ev.get("loss")
    loss_s = f"{loss:.4f}" if isinstance(loss, int | float) else "nan"
    total = ev.get("total_steps")
    where = f"{ev.get('step')}/{total}" if total else str(ev.get("step"))
    return (f"step {where}  loss {loss_s}  {ev.get('expert', '')}  {speed_text(ev.get('s_per_step'))}  "
            f"ETA {eta_text(ev.get('eta_s'))}")


def event_line(ev: dict[str, Any]) -> str | None:
    """One line for the events a person follows (steps, checkpoints, previews, warnings, errors), else None."""
    typ = ev.get("type")
    if typ == "step" and ev.get("kind") == "caption":  # a caption job: one step per clip
        return f"caption {ev.get('step')}/{ev.get('total_steps')}  {ev.get('clip')}: {ev.get('status')}"
    if typ == "step":
        return step_line(ev)
    if typ == "checkpoint":
        files = [Path(f).name for f in ev.get("files") or []]
        return f"checkpoint at step {ev.get('step')}{' (final)' if ev.get('final') else ''}: {', '.join(files)}"
    if typ == "sample":
        return f"preview at step {ev.get('step')}: {ev.get('path')}"
    if typ == "warning":
        return f"warning: {ev.get('message')}"
    if typ == "error":
        return f"error ({ev.get('reason')}): {ev.get('message')}"
    if typ == "cache":
        return f"caching {ev.get('what')}: {ev.get('done')}/{ev.get('total')}"
    if typ == "state" and ev.get("state") in ("loading", "resumed", "completed", "paused", "stopped"):
        extra = f" at step {ev['step']}" if isinstance(ev.get("step"), int) and ev.get("state") != "loading" else ""
        return f"{ev.get('state')}{extra}"
    return None


class EventPrinter:
    """Prints a job folder's new events in a thread while something else (the demo's trainer) runs."""

    def __init__(self, job_dir: Path, say: Callable[[str], None], every_s: float = 0.5) -> None:
        self.job_dir = Path(job_dir)
        self.say = say
        self.every_s = every_s
        self.cursor = jobdir.EventCursor()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EventPrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.drain()

    def drain(self) -> None:
        for ev in jobdir.read_events(self.job_dir, self.cursor):
            line = event_line(ev)
            if line:
                self.say(line)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.drain()
            except Exception:  # progress is a courtesy; never break the run
                time.sleep(self.every_s)
