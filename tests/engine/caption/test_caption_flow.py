"""Captioning in the whole product: a queued caption job on a real daemon, the wizard's offer, and
caption → wizard (Pilot) → submit → a trained LoRA on the tiny models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Button
from wanlora.tui.app import WanloraApp
from wanlora.tui.cli import main

from tests.daemon.conftest import cli, wait_for
from tests.engine.caption.conftest import uncaptioned
from tests.tui.conftest import H100, screen_text

SIZE = (80, 24)


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wanlora.engine.model.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("wan") / "tiny-wan22-i2v")


def _final(daemon: Any, job_id: int, timeout: float = 120) -> dict[str, Any]:
    return wait_for(lambda: (j := daemon.job(job_id))["state"] in ("completed", "failed", "cancelled") and j,
                    timeout, 0.2, what=f"job {job_id} to end")


def test_a_queued_caption_job_runs_through_the_daemon(tiny_vl: Path, home: Path, daemons: Any,
                                                      tmp_path: Path) -> None:
    folder = uncaptioned(tmp_path / "clips", n=2)
    (folder / "clip_000.txt").write_text("kept as it is\n")
    d = daemons({"cpu_slots": 1})
    r = cli("caption", str(folder), "--queue", "--model", str(tiny_vl), "--recipe", "style", home=home)
    assert r.returncode == 0, r.stderr
    job_id = int(r.stdout.split("Submitted job ")[1].split()[0])
    job = _final(d, job_id)
    log = (home / "jobs" / str(job_id) / "train.log").read_text()
    assert job["state"] == "completed", log
    assert job["name"] == "caption-clips" and job["step"] == 1 and job["total_steps"] == 1
    assert (folder / "clip_000.txt").read_text() == "kept as it is\n"
    assert (folder / "clip_001.txt").read_text().strip()
    events = [json.loads(x) for x in (home / "jobs" / str(job_id) / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    assert steps == [dict(steps[0], kind="caption", step=1, total_steps=1, clip="clip_001.mp4", status="written")]
    status = cli("status", home=home)
    assert "caption-clips  COMPLETED  1/1" in status.stdout, status.stdout
    # a bad caption job is refused at the door with the reason
    r = cli("caption", str(tmp_path / "missing"), "--queue", "--model", str(tiny_vl), home=home)
    assert r.returncode == 1 and "does not exist" in r.stderr


async def test_the_scan_step_offers_to_caption_and_does_it(tiny_vl: Path, home: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With a GPU the scan step shows "Caption them now"; pressing it writes the captions and rescans."""
    folder = uncaptioned(tmp_path / "clips", n=2)
    monkeypatch.setenv("WANLORA_CAPTION_MODEL", str(tiny_vl))  # the offer's child loads the tiny captioner
    job = tmp_path / "start.toml"
    job.write_text(f'[job]\nname = "orbit"\npreset = "motion"\n\n[[datasets]]\nfolder = "{folder}"\n')
    app = WanloraApp(home=home, start="wizard", from_file=job, gpus=[H100], watch_terminal=False)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(20):
            if getattr(app.screen, "STEP", "") == "scan":
                break
            await pilot.press("ctrl+n")
            await pilot.pause()
        assert app.screen.STEP == "scan"
        await app.workers.wait_for_complete()
        await pilot.pause()
        text = screen_text(app)
        assert "2 clip(s) have no caption" in text and "wanlora caption" in text, text
        button = app.screen.query_one("#caption-now", Button)
        assert button.display
        button.press()
        for _ in range(600):  # a child process loads torch + the tiny model: seconds on a loaded CI box
            await pilot.pause(0.1)
            if len(list(folder.glob("*.txt"))) == 2 and not app.screen.query_one("#caption-now", Button).disabled:
                break
        for _ in range(50):  # the rescan that follows
            await app.workers.wait_for_complete()
            await pilot.pause(0.1)
            if "have no caption" not in screen_text(app):
                break
        assert sorted(p.name for p in folder.glob("*.txt")) == ["clip_000.txt", "clip_001.txt"]
        text = screen_text(app)
        assert "have no caption" not in text and "without a caption file" not in text, text
        assert not app.screen.query_one("#caption-now", Button).display


@pytest.mark.slow
async def test_caption_then_new_then_submit_trains(tiny_vl: Path, tiny_wan: Path, home: Path, daemons: Any,
                                                   tmp_path: Path) -> None:
    from wanlora.engine.config.io import dump_job, job_from_dict
    from wanlora.engine.train.demo import demo_job_dict

    folder = uncaptioned(tmp_path / "clips", n=3)
    # 1. wanlora caption (character captions with the job's trigger and class)
    assert main(["caption", str(folder), "--model", str(tiny_vl), "--trigger", "sks", "--class", "person"]) == 0
    assert all(p.read_text().startswith("sks, person") for p in folder.glob("*.txt"))
    # 2. wanlora new: the wizard from a starting file (the tiny model, CPU-sized), saved to job.toml
    start, out = tmp_path / "start.toml", tmp_path / "job.toml"
    d = demo_job_dict(folder, tiny_wan, steps=2, name="captioned", num_frames=9, resolution=64)
    d["job"]["trigger_word"] = "sks"
    d["datasets"][0]["default_caption"] = ""
    start.write_text(dump_job(job_from_dict(d)))
    app = WanloraApp(home=home, start="wizard", from_file=start, gpus=[], watch_terminal=False, save_to=out)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(30):
            step = getattr(app.screen, "STEP", "")
            if step == "scan":
                await app.workers.wait_for_complete()
                await pilot.pause()
                text = screen_text(app)
                assert "no caption" in text and "have no caption" not in text, text  # counted: none missing
            if step == "review" or out.exists():
                break
            await pilot.press("ctrl+n")
            await pilot.pause(0.2)
        if not out.exists():
            await pilot.press("ctrl+n")  # review: save
            for _ in range(30):
                await pilot.pause(0.1)
                if out.exists():
                    break
    assert out.is_file(), "the wizard did not write the job file"
    # 3. wanlora submit: a real daemon trains it with the captions just written
    dm = daemons({"cpu_slots": 1})
    r = cli("submit", str(out), home=home)
    assert r.returncode == 0, r.stderr
    job_id = int(r.stdout.split("Submitted job ")[1].split()[0])
    job = _final(dm, job_id, timeout=300)
    assert job["state"] == "completed", (home / "jobs" / str(job_id) / "train.log").read_text()[-3000:]
    assert list((home / "jobs" / str(job_id) / "checkpoints").glob("captioned*.safetensors"))
