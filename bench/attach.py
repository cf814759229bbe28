"""Reattach benchmark: open the job view of a run with a 3000-step history and time the full loss curve.

What a user does after an SSH drop: ``wanlora attach`` on a job that has been training for days.  The job
folder is written with the trainer's own writers (``engine.train.events``: EventLog + Status), then the
real app is started headless at 80×24 (and 200×50) and the clock runs until the loss plot holds every
step and has been drawn.  Prints the times; the target is under 1 s.

    python bench/attach.py [--steps 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_history(job_dir: Path, steps: int) -> None:
    """A job folder as the trainer leaves it: events.jsonl with one step event per step, status.json, log."""
    from wanlora.engine.train.events import EventLog, Status

    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "job.toml").write_text('[job]\nname = "bench_attach"\n')
    events, status = EventLog(job_dir), Status(job_dir)
    events.emit("state", state="running", step=0, total_steps=steps * 2)
    for s in range(1, steps + 1):
        loss = 0.08 + 0.12 * math.exp(-s / 600) + 0.03 * math.sin(s * 12.9898) ** 2
        events.emit("step", step=s, total_steps=steps * 2, loss=loss, lr=1e-4,
                    expert="high_noise" if s // 10 % 2 == 0 else "low_noise", timestep=500.0,
                    s_per_step=2.3, peak_vram_gb=61.0, eta_s=2.3 * (steps * 2 - s))
        if s % 250 == 0:
            events.emit("checkpoint", step=s, files=[f"bench_attach_high_noise_{s:06d}.safetensors"], final=False)
    events.close()
    status.update(state="running", step=steps, total_steps=steps * 2, loss=0.1, eta_s=2.3 * steps)
    with open(job_dir / "train.log", "w") as f:
        for s in range(steps):
            f.write(f"step {s + 1} loss 0.1\n")


async def attach_time(home: Path, size: tuple[int, int], steps: int) -> float:
    from wanlora.tui.app import WanloraApp
    from wanlora.tui.widgets.loss_plot import LossPlot

    t0 = time.perf_counter()
    app = WanloraApp(home=home, start="attach", job_id="1", gpus=[], watch_terminal=False)
    async with app.run_test(size=size) as pilot:
        while True:
            plots = app.screen.query(LossPlot)
            if plots and plots.first().points >= steps and plots.first().drawn_points >= steps:
                break
            await pilot.pause(0.005)
            if time.perf_counter() - t0 > 30:
                raise SystemExit("the loss plot never showed the whole history")
        return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["WANLORA_HOME"] = str(home)
        job = home / "jobs" / "1"
        write_history(job, args.steps)
        size_kb = (job / "events.jsonl").stat().st_size / 1024
        from wanlora.engine.config.jobdir import EventCursor, read_events

        t = time.perf_counter()
        n = sum(1 for _ in read_events(job, EventCursor()))
        t_read = time.perf_counter() - t
        from wanlora.tui.job_model import JobFeed
        from wanlora.tui.widgets.loss_plot import render_plot

        feed = JobFeed(job)
        feed.poll()
        t = time.perf_counter()
        render_plot(feed.steps, feed.losses, 200, 30)
        t_plot = time.perf_counter() - t
        print(f"history: {args.steps} steps, {n} events, events.jsonl {size_kb:.0f} KiB")
        print(f"read events.jsonl: {t_read * 1000:.1f} ms   render the curve (200x30 cells): {t_plot * 1000:.1f} ms")
        for size in ((80, 24), (200, 50)):
            dt = asyncio.run(attach_time(home, size, args.steps))
            verdict = "OK" if dt < 1.0 else "SLOW (target < 1 s)"
            print(f"attach at {size[0]}x{size[1]}: app start → full loss curve drawn in {dt:.3f} s  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
