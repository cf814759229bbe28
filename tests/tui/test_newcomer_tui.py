"""Issue #14 in the TUI (Pilot, 80×24): wizard draft + quit confirmation, unknown keys renamed in place,
errors in full under their field, focus on return, visible on/off, markup-safe advice, an 80-column job
list, and job views that say why a job failed and where its files are."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static
from wanlora.engine.config import jobdir
from wanlora.tui.app import DRAFT, WanloraApp
from wanlora.tui.widgets.field import OnOff

from tests.tui.conftest import H100, field_id, screen_text
from tests.tui.jobs import T0, write_job

SIZE = (80, 24)
REPO = Path(__file__).resolve().parents[2]


def _wizard(home: Path, **kw: Any) -> WanloraApp:
    return WanloraApp(home=home, start="wizard", gpus=[H100], clock=lambda: T0, watch_terminal=False, **kw)


def _app(home: Path, **kw: Any) -> WanloraApp:
    return WanloraApp(home=home, gpus=[], clock=lambda: T0, watch_terminal=False, poll_s=0.1, **kw)


def _text(w: Static) -> str:
    return str(w.render())


async def _to(pilot: Any, step: str) -> None:
    for _ in range(15):
        if getattr(pilot.app.screen, "STEP", "") == step:
            return
        await pilot.press("ctrl+n")
        await pilot.pause()
    raise AssertionError(f"never reached {step}: {screen_text(pilot.app)}")


def test_screens_do_not_import_the_app() -> None:
    for p in sorted((REPO / "wanlora_tui" / "screens").glob("*.py")):
        mods = {n.module for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ImportFrom)}
        assert "wanlora.tui.app" not in mods, f"{p.name} imports the app"


async def test_recipe_advice_keeps_the_trigger_token(home: Path) -> None:
    app = _wizard(home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for _ in range(3):  # motion → style → character: the one whose captions advice says [trigger]
            text = _text(app.screen.query_one("#recipe-details", Static))
            if "trigger" in text.lower() and "[trigger]" in text:
                break
            await pilot.press("down")
            await pilot.pause()
        assert "[trigger]" in text and "write  in" not in text


async def test_quit_asks_first_and_keeps_a_draft_that_new_draft_continues(home: Path) -> None:
    app = _wizard(home)
    async with app.run_test(size=SIZE) as pilot:
        await _to(pilot, "job")
        app.screen.query_one(f"{field_id('job.name')} #ctl").focus()
        await pilot.press("end", "ctrl+u", *"my_orbit")
        await pilot.pause(0.4)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert type(app.screen).__name__ == "ConfirmScreen" and "draft" in screen_text(app)
        await pilot.press("escape")  # keep editing
        await pilot.pause()
        assert getattr(app.screen, "STEP", "") == "job" and app.is_running
        await pilot.press("ctrl+q")
        await pilot.pause()
        app.screen.query_one("#yes").press()
        await pilot.pause()
    draft = home / DRAFT
    assert draft.is_file() and 'name = "my_orbit"' in draft.read_text()
    again = _wizard(home, from_file=draft)
    assert again.wizard.user["job"]["name"] == "my_orbit"


async def test_unknown_key_is_shown_with_did_you_mean_and_renamed(home: Path, tmp_path: Path) -> None:
    f = tmp_path / "typo.toml"
    f.write_text('[job]\nname = "typo"\npreset = "motion"\n[training]\nsteps = 1500\nlerning_rate = 0.0002\n')
    app = _wizard(home, from_file=f)
    async with app.run_test(size=SIZE) as pilot:
        await _to(pilot, "training")
        steps = app.screen.query_one(f"{field_id('training.steps')} #ctl", Input)
        assert steps.value == "1500"  # the rest of the section is not blanked by the typo
        text = _text(app.screen.query_one(".unknown-key", Static))
        assert "training.lerning_rate = 0.0002: unknown key" in text and "did you mean training.learning_rate" in text
        assert "unknown key" in screen_text(app)  # on screen, at the top of the panel
        app.screen.query_one(".unk-rename").press()
        await pilot.pause(0.3)
        assert app.wizard.value("training.learning_rate") == 0.0002 and not app.wizard.unknown
        assert "unknown key" not in screen_text(app)


async def test_an_error_shows_in_full_under_its_field(home: Path) -> None:
    app = _wizard(home)
    async with app.run_test(size=SIZE) as pilot:
        await _to(pilot, "model")
        app.screen.query_one(f"{field_id('model.name_or_path')} #ctl").focus()
        await pilot.press("end", "ctrl+u", *"/no/such/model")
        await pilot.pause(0.5)
        err = app.wizard.field_error("model.name_or_path")
        assert err is not None
        box = app.screen.query_one(f"{field_id('model.name_or_path')} .field-finding", Static)
        assert box.display and err.message in _text(box) and err.fix in _text(box)
        assert "(see field)" in _text(app.screen.query_one("#wiz-status", Static))


async def test_returning_to_a_panel_starts_at_its_first_field(home: Path) -> None:
    app = _wizard(home)
    async with app.run_test(size=SIZE) as pilot:
        await _to(pilot, "training")
        ctl = list(app.screen.query("#fields #ctl"))
        ctl[-1].focus()
        await pilot.press("ctrl+n")
        await pilot.pause()
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert app.screen.STEP == "training" and app.focused is list(app.screen.query("#fields #ctl"))[0]


async def test_checkbox_glyph_and_inputs_stand_out(home: Path) -> None:
    app = _wizard(home)
    async with app.run_test(size=SIZE) as pilot:
        await _to(pilot, "model")
        cb = app.screen.query_one(f"{field_id('model.low_vram')} #ctl", OnOff)
        glyphs = set()
        for _ in range(2):
            glyphs.add(("✓" in str(cb.render()), cb.value))
            cb.toggle()
            await pilot.pause()
        assert glyphs == {(True, True), (False, False)}
        inp = app.screen.query_one(f"{field_id('model.name_or_path')} #ctl", Input)
        inp.blur()
        await pilot.pause()
        bg, around = inp.styles.background, app.screen.styles.background
        assert abs(bg.brightness - around.brightness) > 0.08  # not 234 on 233


async def test_job_list_fits_80_columns_and_shows_spooled_names(home: Path, monkeypatch: Any) -> None:
    from wanlora.daemon.spool import submit_file
    from wanlora.tui import daemon_link

    write_job(home, "1", name="a_rather_long_job_name_for_the_list", steps_done=2000, total=2000, state="completed")
    write_job(home, "2", name="gone", steps_done=10, total=100, state="queued")
    write_job(home, "3", name="orbit", steps_done=50, total=2000)
    submit_file(home, '[job]\nname = "waiting_one"\n', name="x.toml")
    rows = [{"id": 1, "name": "a_rather_long_job_name_for_the_list", "state": "completed", "reason": "completed"},
            {"id": 3, "name": "orbit", "state": "running", "reason": ""}]  # job 2 was removed
    monkeypatch.setattr(daemon_link, "daemon_jobs", lambda _home: rows)
    app = _app(home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        table = app.screen.query_one("#jobs")
        assert table.virtual_size.width <= 80
        text = screen_text(app)
        assert "completed" in text and "complet " not in text
        assert "waiting_one" in text and "submitted" in text and ".toml" not in text
        assert "gone" not in text  # removed from the queue: not "queued" forever


async def test_failed_job_view_shows_the_reason_and_last_log_lines_in_full(home: Path) -> None:
    d = write_job(home, "7", name="broken", steps_done=0, total=100, state="failed", checkpoints=0, log_lines=0)
    msg = ("datasets[0].folder /data/clips has no usable clip: 3 files could not be decoded (truncated.mp4, "
           "empty.mp4, bad.mov); fix: re-encode them with ffmpeg or remove them")
    st = json.loads((d / jobdir.STATUS).read_text())
    st.update(reason="data", message=msg)
    jobdir.write_json_atomic(d / jobdir.STATUS, st)
    (d / jobdir.TRAIN_LOG).write_text("loading model\nWriting model shards: 100%|██| 1/1 [00:00<00:00, 6.3it/s]\n"
                                      "ERROR DataExhausted: no usable clip in /data/clips\n")
    app = _app(home, start="attach", job_id="7")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        box = _text(app.screen.query_one("#job-problem", Static))
        assert msg in box and "ERROR DataExhausted: no usable clip in /data/clips" in box
        assert "Writing model shards" not in box and "wanlora retry 7" in box
        assert "waiting for the first step" not in screen_text(app)


async def test_completed_job_view_names_the_folder_files_and_how_to_load_them(home: Path) -> None:
    d = write_job(home, "8", name="orbit_v1", steps_done=3000, total=3000, state="completed")
    for ex in ("high_noise", "low_noise"):
        (d / jobdir.CHECKPOINTS / f"orbit_v1_{ex}.safetensors").write_bytes(b"x")
    app = _app(home, start="attach", job_id="8")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        files = _text(app.screen.query_one("#job-files", Static))
        assert f"in {d / jobdir.CHECKPOINTS}/" in files
        assert "orbit_v1_high_noise.safetensors" in files and "orbit_v1_low_noise.safetensors" in files
        assert "ComfyUI" in files and "load_into_transformer_2=True" in files
        assert "completed · completed" not in screen_text(app).lower()


async def test_paused_job_shows_no_eta(home: Path) -> None:
    write_job(home, "9", steps_done=100, total=3000, state="paused")
    app = _app(home, start="attach", job_id="9")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        step = _text(app.screen.query_one("#job-step", Static))
        assert "ETA" not in step and "paused" in step


def test_review_estimate_of_a_short_job_is_not_zero() -> None:
    from wanlora.tui.screens.review import hours, money, speed

    assert speed(0.043) == "0.043 s/step" and speed(4.31) == "4.3 s/step" and speed(23.4) == "23 s/step"
    assert hours(60 * 0.043 / 3600) == "3 s" and hours(0.5) == "30 min" and hours(2.4) == "2.4 h"
    assert money(0.0004) == "< 0.01" and money(5.976) == "5.98"


def test_a_submit_from_the_tui_on_a_full_disk_names_the_spool_and_its_free_space(tmp_path, monkeypatch):
    """The wizard's submit shows this message; a bare "[Errno 28]" would not say where to free space."""
    import errno

    from wanlora.daemon import spool
    from wanlora.daemon.client import NotSpooled
    from wanlora.tui import daemon_link

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "submit_file", full)
    with pytest.raises(NotSpooled) as e:
        daemon_link.submit(tmp_path, "[job]\nname = 'x'\n", "x")
    msg = str(e.value)
    assert str(tmp_path / "spool") in msg and "No space left" in msg and "free" in msg
