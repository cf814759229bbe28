"""``python -m wanlora.engine.caption JOB_DIR``: a queued caption job, run by the daemon like a trainer.

It keeps the job-folder contract (engine/config/jobdir.py): ``run.lock`` held for its life (re-adoption
after a daemon restart), ``status.json`` with a heartbeat, one ``step`` event per clip (``kind =
"caption"``, so ``wanlora status`` shows clips done / to do), ``control/pause`` and SIGTERM honoured between
clips, and the trainer's exit codes (0 done, 75 paused, 76 out of memory, 78 data, 79 config, 80 locked).
Every caption is on disk before the next clip starts; a retried or resumed job captions only what is
still missing.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from wanlora.engine.config import jobdir
from wanlora.engine.config.caption_job import CaptionSpec, load_spec
from wanlora.engine.config.findings import JobError


def _fail(status, events, reason: str, message: str, code: int) -> int:  # noqa: ANN001 - events.Status/EventLog
    status.update(state="failed", reason=reason, message=message)
    events.emit("error", reason=reason, message=message)
    print(f"error ({reason}): {message}", file=sys.stderr, flush=True)
    return code


def run_job(job_dir: Path) -> int:
    """Caption the job's folder; returns the exit code (see the module docstring)."""
    from wanlora.engine.caption import run
    from wanlora.engine.data.scan import ScanError
    from wanlora.engine.train.control import RunLock, StopSignal, take_flags
    from wanlora.engine.train.events import EventLog, Heartbeat, Status

    lock = RunLock(job_dir)
    if not lock.acquire():
        print(f"{job_dir}: another process holds run.lock", file=sys.stderr)
        return jobdir.EXIT_LOCKED
    events, status = EventLog(job_dir), Status(job_dir)
    beat = Heartbeat(status, events, jobdir.HEARTBEAT_INTERVAL_S).start()
    stop = StopSignal().install()
    try:
        try:
            spec: CaptionSpec = load_spec(job_dir)
        except (JobError, OSError) as e:
            return _fail(status, events, "config", str(e), jobdir.EXIT_CONFIG)
        opts = run.CaptionOptions(recipe=spec.recipe, trigger=spec.trigger, class_word=spec.class_word,
                                  overwrite=spec.overwrite, caption_ext=spec.caption_ext)
        try:
            todo = run.plan(spec.folder, spec.caption_ext, spec.overwrite)
        except ScanError as e:
            return _fail(status, events, "data", str(e), jobdir.EXIT_DATA)
        total = len(todo.todo)
        for p, why in todo.skipped:
            events.emit("warning", message=f"{p}: {why}; skipped")
            print(f"skipped {p.name}: {why}", flush=True)
        print(f"{total} clip(s) to caption in {todo.folder} ({len(todo.captioned)} already have one)", flush=True)
        status.update(state="loading", step=0, total_steps=total, message=f"loading {spec.model}")
        events.emit("state", state="loading", step=0)
        if not total:
            status.update(state="completed", message="every clip already has a caption")
            events.emit("state", state="completed", step=0)
            return jobdir.EXIT_OK
        captioner = _load(spec, status, events)
        if isinstance(captioner, int):
            return captioner
        status.update(state="running", message=f"captioning with {spec.model}")
        paused = False

        def should_stop() -> bool:
            nonlocal paused
            paused = paused or jobdir.FLAG_PAUSE in take_flags(job_dir)
            return paused or stop.requested is not None

        def on_result(i: int, n: int, res: run.ClipResult) -> None:
            line = f"[{i}/{n}] {res.path.name}: " + (f"skipped ({res.error})" if res.status == "skipped"
                                                       else f"{res.status} ({res.seconds:.1f} s) {res.caption}")
            print(line, flush=True)
            events.emit("step", kind="caption", step=i, total_steps=n, clip=res.path.name, status=res.status,
                        s_per_step=round(res.seconds, 3))
            if res.status == "skipped":
                events.emit("warning", message=f"{res.path}: {res.error}; skipped")
            status.update(step=i)

        try:
            summary = run.caption_files(captioner, todo.todo, opts, on_result=on_result, should_stop=should_stop)
        except Exception as e:
            if "out of memory" in str(e).lower():
                return _fail(status, events, "oom", f"the GPU ran out of memory while captioning ({e}); use "
                             "quant = \"4bit\" or a smaller model", jobdir.EXIT_OOM)
            raise
        done = len(summary.of("written"))
        skipped = len(summary.of("skipped"))
        tail = f"{done} caption(s) written, {skipped} unreadable clip(s) skipped"
        if summary.interrupted:
            if paused:
                status.update(state="paused", message=tail)
                events.emit("state", state="paused", step=len(summary.results))
                return jobdir.EXIT_PAUSED
            status.update(state="stopped", message=tail)
            events.emit("state", state="stopped", step=len(summary.results))
            sig = signal.Signals[stop.requested] if stop.requested in signal.Signals.__members__ else signal.SIGTERM
            return 128 + int(sig)
        status.update(state="completed", step=total, message=tail)
        events.emit("state", state="completed", step=total)
        print(tail, flush=True)
        return jobdir.EXIT_OK
    finally:
        stop.uninstall()
        beat.stop()
        events.close()
        lock.release()


def _load(spec: CaptionSpec, status, events):  # noqa: ANN001, ANN202 - Captioner or an exit code
    from wanlora.engine.caption.vlm import CaptionModelError, load_captioner

    t0 = time.monotonic()
    try:
        cap = load_captioner(spec.model, quant=spec.quant)
    except CaptionModelError as e:
        return _fail(status, events, "config", str(e), jobdir.EXIT_CONFIG)
    print(f"loaded {spec.model} on {cap.device} ({'4-bit' if cap.quantized else 'bf16/fp32'}, "
          f"{cap.backend} inputs) in {time.monotonic() - t0:.1f} s", flush=True)
    return cap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m wanlora.engine.caption JOB_DIR", file=sys.stderr)
        return 2
    try:  # no weight-loading bars in the job's log: one line per clip is the progress
        from transformers.utils import logging as tl

        tl.disable_progress_bar()
        tl.set_verbosity_error()
    except ImportError:
        pass
    return run_job(Path(argv[0]))


if __name__ == "__main__":
    raise SystemExit(main())
