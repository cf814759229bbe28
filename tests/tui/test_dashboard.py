"""Dashboard and job view against job folders (daemon down): list, STALE, trainer ETA, live updates, keys."""

from __future__ import annotations

import json
from pathlib import Path

from wanlora.engine.config import jobdir
from wanlora.tui.app import WanloraApp
from wanlora.tui.job_model import JobFeed
from wanlora.tui.widgets.loss_plot import LossPlot

from tests.tui.conftest import screen_text
from tests.tui.jobs import T0, loss_at, write_job

SIZE = (80, 24)


def _app(home: Path, **kw: object) -> WanloraApp:
    return WanloraApp(home=home, gpus=[], clock=lambda: T0, watch_terminal=False, poll_s=0.1, **kw)  # type: ignore[arg-type]


async def test_list_shows_states_and_stale_and_opens_a_job(home: Path) -> None:
    write_job(home, "1", name="orbit_v1", steps_done=50, total=100)
    write_job(home, "2", name="frung", steps_done=50, total=100, heartbeat_age_s=31.0)  # > 3 × 10 s
    write_job(home, "3", name="film16", steps_done=100, total=100, state="completed", heartbeat_age_s=9999)
    app = _app(home)  # plain `wanlora` with jobs present → dashboard
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        text = screen_text(app)
        rows = {line.split()[1]: line for line in text.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"])}
        assert "running" in rows["orbit_v1"] and "50/100" in rows["orbit_v1"]
        assert "STALE" in rows["frung"]
        assert "completed" in rows["film16"] and "STALE" not in rows["film16"]
        assert "daemon not running" in text
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert type(app.screen).__name__ == "JobScreen" and app.screen.job_id == "1"
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert type(app.screen).__name__ == "DashboardScreen"


async def test_job_view_shows_the_trainers_eta_and_whole_history(home: Path) -> None:
    write_job(home, "4", steps_done=1200, total=3000)
    app = _app(home, start="attach", job_id="4")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "1200/3000 · ETA 1h09m (trainer)" in text  # 2.31 s × 1800 steps, from status.json
        assert "expert high_noise" in text or "expert low_noise" in text
        assert "97%" in text and "67°C" in text  # GPU telemetry from status.json
        assert "checkpoints: 8" in text
        plot = app.screen.query_one(LossPlot)
        assert plot.points == 1200 and plot.drawn_points == 1200
        assert "step 1" in text and "1200" in text  # x axis spans the whole run


async def test_job_view_follows_new_events_and_a_resume_rewind(home: Path) -> None:
    d = write_job(home, "5", steps_done=100, total=300)
    app = _app(home, start="attach", job_id="5")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        plot = app.screen.query_one(LossPlot)
        assert plot.points == 100
        with open(d / jobdir.EVENTS, "a") as f:  # the trainer goes on
            for s in range(101, 121):
                f.write(json.dumps({"type": "step", "step": s, "total_steps": 300, "loss": loss_at(s),
                                    "eta_s": 2.0 * (300 - s)}) + "\n")
            f.write('{"type": "step", "step": 121, "loss"')  # half-written line: not read yet
        status = jobdir.read_status(d) or {}
        jobdir.write_json_atomic(d / jobdir.STATUS, {**status, "step": 120, "eta_s": 360.0})
        await pilot.pause(0.5)
        assert plot.points == 120
        assert "120/300 · ETA 6m00s (trainer)" in screen_text(app)
        with open(d / jobdir.EVENTS, "a") as f:  # finish the line, then a resume from step 110's state
            f.write(': 0.1}\n')
            for s in range(111, 114):
                f.write(json.dumps({"type": "step", "step": s, "total_steps": 300, "loss": 0.5}) + "\n")
        await pilot.pause(0.5)
        assert plot.points == 113  # steps 111-121 of the lost run were replaced, not duplicated


def test_feed_reads_only_new_bytes(tmp_path: Path) -> None:
    d = write_job(tmp_path, "9", steps_done=300, total=600)
    feed = JobFeed(d)
    assert feed.poll() and len(feed.losses) == 300
    offset = feed.cursor.offset
    assert offset == (d / jobdir.EVENTS).stat().st_size
    assert not feed.poll()  # nothing new: nothing changed, nothing re-read
    assert feed.cursor.offset == offset


async def test_control_keys_ask_first(home: Path) -> None:
    write_job(home, "6", steps_done=10, total=100)
    app = _app(home, start="attach", job_id="6")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.pause(0.3)
        for key, word in (("p", "Pause job 6"), ("c", "Cancel job 6"), ("s", "Save a checkpoint"),
                          ("r", "Resume job 6")):
            await pilot.press(key)
            await pilot.pause(0.1)
            assert word in screen_text(app) and type(app.screen).__name__ == "ConfirmScreen"
            await pilot.press("n")
            await pilot.pause(0.1)
            assert type(app.screen).__name__ == "JobScreen"
        await pilot.press("p")
        await pilot.pause(0.1)
        await pilot.press("y")  # the daemon is down: the user is told how to start it
        for _ in range(20):
            await pilot.pause(0.1)
            if "wanlora daemon start" in " ".join(screen_text(app).split()):
                break
        assert "wanlora daemon start" in " ".join(screen_text(app).split())
        assert not (home / "jobs" / "6" / "control" / "pause").exists()
