"""Screenshots at 80×24 of the screens people see most, compared with accepted SVGs (syrupy).

Deterministic by construction: fixed GPU info, a fixed clock, job folders with a fixed history, fixed
paths (the dataset folder and the working directory appear on screen), no cursor blink.
Update after an intended change with ``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input
from wanlora.tui.app import WanloraApp

from tests.tui.conftest import H100
from tests.tui.jobs import T0, write_job

FIXED = Path("/tmp/wanlora-tui-snapshots")


@pytest.fixture
def fixed_dirs(monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A home and a clips folder at fixed paths (they are printed on screen)."""
    from wanlora.engine.data.synthetic import write_clips

    shutil.rmtree(FIXED, ignore_errors=True)
    home, clips = FIXED / "home", FIXED / "clips"
    home.mkdir(parents=True)
    write_clips(clips, n=3, num_frames=24, size=(64, 64), caption="orbit 360 around the subject")
    monkeypatch.setenv("WANLORA_HOME", str(home))
    monkeypatch.chdir(FIXED)
    return home, clips


async def _still(pilot: Any) -> None:
    for w in pilot.app.screen.query(Input):
        w.cursor_blink = False
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _wizard(home: Path, recipe: str | None = None) -> WanloraApp:
    return WanloraApp(home=home, start="wizard", recipe=recipe, gpus=[H100], clock=lambda: T0,
                      watch_terminal=False)


def test_recipe_screen(snap_compare: Any, fixed_dirs: tuple[Path, Path]) -> None:
    assert snap_compare(_wizard(fixed_dirs[0]), press=["down"], run_before=_still)


def test_target_panel(snap_compare: Any, fixed_dirs: tuple[Path, Path]) -> None:
    async def go(pilot: Any) -> None:
        for _ in range(5):  # gpu → job → model → quantization → multistage → target
            await pilot.press("ctrl+n")
            await pilot.pause()
        pilot.app.screen.query_one("#f-target-rank #ctl").focus()
        await pilot.press("end", "ctrl+u", "3", "2")
        await pilot.pause(0.35)
        await _still(pilot)

    assert snap_compare(_wizard(fixed_dirs[0], "style"), run_before=go)


def test_review_screen(snap_compare: Any, fixed_dirs: tuple[Path, Path]) -> None:
    home, clips = fixed_dirs

    async def go(pilot: Any) -> None:
        app = pilot.app
        app.wizard.set("datasets[0].folder", str(clips))
        app.wizard.set("job.name", "orbit_v1")
        for _ in range(16):  # recipe → gpu → … → review
            if getattr(app.screen, "STEP", "") == "review":
                break
            await pilot.press("ctrl+n")
            await pilot.pause()
            await app.workers.wait_for_complete()
        assert app.screen.STEP == "review"
        app.screen.query_one("#price", Input).focus()
        await pilot.press("2", ".", "4", "9")
        await _still(pilot)

    assert snap_compare(_wizard(home, "motion"), run_before=go)


def test_dashboard_list(snap_compare: Any, fixed_dirs: tuple[Path, Path]) -> None:
    home = fixed_dirs[0]
    write_job(home, "1", name="orbit_v1")
    write_job(home, "2", name="film16", state="completed", steps_done=2000, total=2000)
    write_job(home, "3", name="frung", heartbeat_age_s=120.0)  # 120 s > 3 × 10 s: STALE
    app = WanloraApp(home=home, start="home", gpus=[H100], clock=lambda: T0, watch_terminal=False)
    assert snap_compare(app, run_before=_still)


def test_job_view(snap_compare: Any, fixed_dirs: tuple[Path, Path]) -> None:
    home = fixed_dirs[0]
    write_job(home, "7", name="orbit_v1")
    app = WanloraApp(home=home, start="attach", job_id="7", gpus=[H100], clock=lambda: T0, watch_terminal=False)
    assert snap_compare(app, run_before=_still)
