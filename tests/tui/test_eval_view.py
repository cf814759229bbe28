"""Eval loss where users look (#17): `wanlora status` (text and --json) and the job view's second curve."""

from __future__ import annotations

import json
from pathlib import Path

from wanlora.daemon.home import Home
from wanlora.daemon.queue import Queue
from wanlora.engine.config import jobdir

from tests.tui.jobs import write_job

EVALS = [(250, 0.61, 0.42), (500, 0.55, 0.40), (750, 0.52, 0.41), (1000, 0.50, 0.43)]


def _job_with_evals(tmp_path: Path) -> tuple[Home, Path]:
    home = Home.resolve(tmp_path / "home")
    home.ensure()
    q = Queue(home.db)
    row = q.add(name="orbit_v1", gpus_req="auto", total_steps=3000)
    q.close()
    d = write_job(home.root, str(row.id), steps_done=1000)
    with open(d / jobdir.EVENTS, "a") as f:
        for i, (step, hi, lo) in enumerate(EVALS):
            bands = [{"lo": 900.0, "hi": 1000.0, "t": 950.0, "loss": hi}]
            f.write(json.dumps({"v": 1, "seq": 10_000 + i, "ts": 0, "type": "eval", "step": step, "final": False,
                                "experts": {"high_noise": {"loss": hi, "bands": bands},
                                            "low_noise": {"loss": lo, "bands": bands}},
                                "items": 3, "bands": 4, "eval_s": 12.5}) + "\n")
    st = jobdir.read_status(d)
    st["eval"] = {"step": 1000, "high_noise": 0.5, "low_noise": 0.43}
    jobdir.write_json_atomic(d / jobdir.STATUS, st)
    return home, d


def test_status_shows_the_last_eval_loss_in_text_and_json(tmp_path: Path, capsys) -> None:
    from wanlora.tui.cli import main

    home, d = _job_with_evals(tmp_path)
    assert main(["status", d.name, "--json", "--home", str(home.root)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["job"]["trainer_status"]["eval"] == {"step": 1000, "high_noise": 0.5, "low_noise": 0.43}
    assert main(["status", d.name, "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    assert "eval loss  high_noise 0.50000   low_noise 0.43000   (step 1000; `wanlora compare 1` to pick)" in out


def test_job_feed_keeps_one_eval_point_per_save_and_the_plot_draws_it(tmp_path: Path) -> None:
    from wanlora.tui.job_model import JobFeed
    from wanlora.tui.widgets.loss_plot import render_plot

    _home, d = _job_with_evals(tmp_path)
    feed = JobFeed(d)
    feed.poll()
    assert feed.eval_steps == [250, 500, 750, 1000]
    assert feed.eval_losses == [(hi + lo) / 2 for _s, hi, lo in EVALS]
    # a resumed run that saves step 750 again replaces the later points
    with open(d / jobdir.EVENTS, "a") as f:
        f.write(json.dumps({"v": 1, "seq": 20_000, "ts": 0, "type": "eval", "step": 750,
                            "experts": {"high_noise": {"loss": 0.3}}}) + "\n")
    feed.poll()
    assert feed.eval_steps == [250, 500, 750] and feed.eval_losses[-1] == 0.3
    lines = render_plot(feed.steps, feed.losses, 80, 10, 0.9, feed.eval_steps, feed.eval_losses)
    yellow = [s for line in lines for s in line.spans if "yellow" in str(s.style)]
    assert yellow and "· eval 0.300 (held-out)" in lines[-1].plain
    plain = render_plot(feed.steps, feed.losses, 80, 10, 0.9)
    assert not [s for line in plain for s in line.spans if "yellow" in str(s.style)]


async def test_job_view_at_80_columns_draws_the_eval_curve(tmp_path: Path, monkeypatch) -> None:
    from wanlora.tui.app import WanloraApp
    from wanlora.tui.widgets.loss_plot import LossPlot

    from tests.tui.conftest import screen_text
    from tests.tui.jobs import T0

    home, d = _job_with_evals(tmp_path)
    monkeypatch.setenv("WANLORA_HOME", str(home.root))
    app = WanloraApp(home=home.root, gpus=[], clock=lambda: T0, watch_terminal=False, poll_s=0.1,  # type: ignore[arg-type]
                     start="attach", job_id=d.name)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        text = screen_text(app)
        assert f"step 1 · eval {(0.50 + 0.43) / 2:.3f} (held-out)" in text  # the plot's legend, last save
        plot = app.screen.query_one(LossPlot)
        assert list(plot._eval[0]) == [250, 500, 750, 1000]
