"""The wizard end to end at 80×24, keyboard only: recipe → GPU → every panel → scan → review → spool.

The spool file must be exactly what ``presets.resolve`` makes of the recipe + the detected tier + the edits
typed in the wizard — nothing more, nothing less — and an invalid edit must keep Submit disabled with
the validator's message on screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Button
from wanlora.engine.config.io import job_from_dict, read_toml
from wanlora.engine.config.presets import resolve
from wanlora.tui.app import WanloraApp

from tests.tui.conftest import H100, field_id, screen_text

SIZE = (80, 24)


def spooled(home: Path) -> list[Path]:
    return sorted(home.glob("spool/**/*.toml"))


async def tab_to(pilot: Any, key: str, limit: int = 80) -> None:
    """Press tab until the control of field ``key`` has the focus (what a keyboard user does)."""
    app = pilot.app
    target = app.screen.query_one(f"{field_id(key)} #ctl")
    for _ in range(limit):
        if app.focused is target:
            return
        await pilot.press("tab")
    raise AssertionError(f"tab never reached {key}; focus is on {app.focused!r}")


async def type_into(pilot: Any, key: str, text: str, *, by_tab: bool = False) -> None:
    """Type into a field like a user (the whole text replaced); ``by_tab`` walks the focus there by tab."""
    if by_tab:
        await tab_to(pilot, key)
    else:  # same keys, fewer of them: the tab walk is exercised by the tests that pass by_tab
        pilot.app.screen.query_one(f"{field_id(key)} #ctl").focus()
    await pilot.press("end", "ctrl+u", *text)
    await pilot.pause(0.35)  # typed edits are validated after a short debounce


async def next_step(pilot: Any, expect: str) -> None:
    await pilot.press("ctrl+n")
    await pilot.pause()
    step = getattr(pilot.app.screen, "STEP", "")
    assert step == expect, f"expected step {expect}, got {step!r}:\n{screen_text(pilot.app)}"


async def walk(pilot: Any, recipe_index: int, edits: dict[str, str]) -> None:
    """Recipe (by arrow keys) → GPU (detected tier) → panels with ``edits`` typed → scan → review."""
    for _ in range(recipe_index):
        await pilot.press("down")
    await next_step(pilot, "gpu")
    await pilot.pause(0.2)
    await next_step(pilot, "job")
    for step in ("job", "model", "quantization", "multistage", "target", "save", "training", "advanced",
                 "datasets", "sample"):
        if pilot.app.screen.STEP != step:
            await next_step(pilot, step)
        for key, text in edits.items():
            if key.split(".")[0].split("[")[0] == step:
                await type_into(pilot, key, text, by_tab=key == "job.name")
    await next_step(pilot, "scan")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await next_step(pilot, "review")


RECIPES = {
    # recipe: (index in the list, typed edits as the user types them, the same edits as job values)
    "motion": (0, {"job.name": "orbit_v1", "training.steps": "1800"},
               {"job": {"name": "orbit_v1"}, "training": {"steps": 1800}}),
    "style": (1, {"job.name": "film16", "job.trigger_word": "f16look", "target.rank": "32"},
              {"job": {"name": "film16", "trigger_word": "f16look"}, "target": {"rank": 32}}),
    "character": (2, {"job.name": "frung", "job.trigger_word": "frung", "training.dop.preservation_class": "woman"},
                  {"job": {"name": "frung", "trigger_word": "frung"},
                   "training": {"dop": {"preservation_class": "woman"}}}),
}


@pytest.mark.parametrize("recipe", list(RECIPES))
async def test_each_recipe_reaches_the_spool(recipe: str, home: Path, clips: Path) -> None:
    index, typed, values = RECIPES[recipe]
    typed = {**typed, "datasets[0].folder": str(clips)}
    app = WanloraApp(home=home, start="wizard", gpus=[H100], watch_terminal=False)
    async with app.run_test(size=SIZE) as pilot:
        await walk(pilot, index, typed)
        submit = app.screen.query_one("#next", Button)
        assert not submit.disabled, screen_text(app)
        await pilot.press("ctrl+n")  # submit: the daemon is not running → asked whether to start it
        await pilot.pause(0.3)
        assert "daemon is not running" in screen_text(app)
        await pilot.press("n")  # only queue it
        for _ in range(20):
            await pilot.pause(0.1)
            if spooled(home):
                break
        files = spooled(home)
        assert len(files) == 1, files
        for _ in range(50):  # the wizard's 14 screens are popped one by one; slow on a loaded CI box
            await pilot.pause(0.1)
            if type(app.screen).__name__ == "DashboardScreen":
                break
        assert type(app.screen).__name__ == "DashboardScreen"
        assert "submitted" in screen_text(app)

    user = {**values, "datasets": [{"folder": str(clips)}]}
    user.setdefault("job", {}).update({"preset": recipe, "vram_tier": 80})
    expected = resolve(user, recipe=recipe, tier=80, detected_vram_gb=H100.free_gb).job
    got = job_from_dict(read_toml(files[0]))
    assert got == expected
    # the recipe and tier really are in there (not just defaults): e.g. the 80 GB tier's fp8 experts
    assert got.quantization.transformer == "fp8" and got.job.preset == recipe


async def test_invalid_frames_block_submission_with_the_message(home: Path, clips: Path) -> None:
    app = WanloraApp(home=home, start="wizard", gpus=[H100], watch_terminal=False)
    async with app.run_test(size=SIZE) as pilot:
        await walk(pilot, 0, {"datasets[0].folder": str(clips), "datasets[0].num_frames": "40"})
        text = screen_text(app)
        assert "datasets[0].num_frames" in text and "41" in text, text  # the message and the nearest valid
        assert app.screen.query_one("#next", Button).disabled
        await pilot.press("ctrl+n")
        await pilot.pause(0.3)
        assert app.screen.STEP == "review" and not spooled(home)
        # fix it on the DATASETS panel (back keeps every value), then submission is allowed
        for _ in range(2):
            await pilot.press("ctrl+b")
            await pilot.pause()
        assert app.screen.STEP == "sample"
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert app.screen.STEP == "datasets"
        folder = app.screen.query_one(f"{field_id('datasets[0].folder')} #ctl")
        assert folder.value == str(clips)  # kept across back/next
        assert "4n+1" in screen_text(app) or "41" in screen_text(app)
        await type_into(pilot, "datasets[0].num_frames", "33")
        for step in ("sample", "scan", "review"):
            await next_step(pilot, step)
            await pilot.app.workers.wait_for_complete()
        assert not app.screen.query_one("#next", Button).disabled
        assert app.wizard.job is not None and app.wizard.job.datasets[0].num_frames == 33


async def test_schema_error_is_shown_on_the_field_and_blocks(home: Path, clips: Path) -> None:
    """A value the schema rejects (rank 0) is reported on the field and in the review, not swallowed."""
    app = WanloraApp(home=home, start="wizard", recipe="motion", gpus=[H100], watch_terminal=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert app.screen.STEP == "gpu"  # --preset skips the recipe list
        for step in ("job", "model", "quantization", "multistage", "target"):
            await next_step(pilot, step)
        await type_into(pilot, "target.rank", "0")
        text = screen_text(app)
        assert "✗" in text and "target.rank" in text, text
        assert not app.wizard.can_submit
        await type_into(pilot, "target.rank", "32")
        assert app.wizard.job is not None and app.wizard.job.target.rank == 32
        assert app.wizard.origin("target.rank") == "user"
        await pilot.press("ctrl+r")  # back to the recipe's value
        await pilot.pause(0.1)
        assert app.wizard.job.target.rank == 16 and app.wizard.origin("target.rank") == "recipe"


async def test_no_gpu_found_lets_the_user_pick_a_tier(home: Path) -> None:
    app = WanloraApp(home=home, start="wizard", recipe="style", gpus=[], watch_terminal=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert "No GPU found" in screen_text(app)
        assert "Tier 24" in screen_text(app)  # without a GPU the list starts on the common 24 GB card
        await pilot.press("up")  # → 12 GB
        await next_step(pilot, "job")
        assert app.wizard.tier == 12
        assert app.wizard.job is not None and app.wizard.job.model.layer_offloading  # the 12 GB tier's setting
        assert app.wizard.origin("model.layer_offloading") == "tier"


async def test_datasets_can_be_added_and_removed(home: Path, clips: Path) -> None:
    app = WanloraApp(home=home, start="wizard", recipe="motion", gpus=[H100], watch_terminal=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        for step in ("job", "model", "quantization", "multistage", "target", "save", "training", "advanced",
                     "datasets"):
            await next_step(pilot, step)
        await type_into(pilot, "datasets[0].folder", str(clips), by_tab=True)
        add = app.screen.query_one("#add-datasets", Button)
        for _ in range(80):
            if app.focused is add:
                break
            await pilot.press("tab")
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.wizard.rows("datasets") == 2
        assert app.focused is app.screen.query_one(f"{field_id('datasets[1].folder')} #ctl")
        assert "Dataset 2" in screen_text(app)
        # remove the first one: the second one becomes datasets[0]
        await type_into(pilot, "datasets[1].folder", str(clips))
        app.screen.query_one("#rm-datasets-0", Button).focus()
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.wizard.rows("datasets") == 1
        assert app.wizard.job is not None and app.wizard.job.datasets[0].folder == str(clips)


async def test_multistage_panel_edits_one_experts_own_settings(home: Path) -> None:
    """The per-expert tables render from the schema like any section: type a learning rate for the
    high-noise expert only; the origin badge says user, the other expert keeps the job-wide value."""
    from wanlora.engine.config.schema import expert_plan

    app = WanloraApp(home=home, start="wizard", recipe="motion", gpus=[H100], watch_terminal=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        for step in ("job", "model", "quantization", "multistage"):
            await next_step(pilot, step)
        from wanlora.tui.widgets.field import SchemaField

        keys = {f.key for f in app.screen.query(SchemaField)}
        assert {"multistage.switch_every", "multistage.high_noise.train", "multistage.high_noise.learning_rate",
                "multistage.low_noise.rank", "multistage.low_noise.timestep_bias"} <= keys, keys
        assert app.wizard.origin("multistage.high_noise.train") == "recipe"
        await type_into(pilot, "multistage.high_noise.learning_rate", "5e-5")
        job = app.wizard.job
        assert job is not None and expert_plan(job, "high_noise").learning_rate == 5e-5
        assert expert_plan(job, "low_noise").learning_rate == job.training.learning_rate == 1e-4
        assert app.wizard.origin("multistage.high_noise.learning_rate") == "user"
        assert "[multistage.high_noise]" in app.wizard.toml() and "learning_rate = 5e-05" in app.wizard.toml()
        await pilot.press("ctrl+r")  # back to "empty = the job-wide value"
        await pilot.pause(0.1)
        assert app.wizard.job.multistage.high_noise.learning_rate is None


async def test_review_offers_a_trial_on_this_gpu_and_runs_it_on_the_saved_file(
        home: Path, clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wanlora.tui.screens import review

    ran: list[Path] = []
    monkeypatch.setattr(review, "run_trial_in_terminal", lambda app, path: ran.append(path) or 0)
    app = WanloraApp(home=home, start="wizard", gpus=[H100], watch_terminal=False)
    async with app.run_test(size=SIZE) as pilot:
        await walk(pilot, 0, {"job.name": "orbit_v1", "datasets[0].folder": str(clips)})
        target = tmp_path / "saved" / "orbit_v1.toml"
        app.screen.query_one("#save-path").value = str(target)
        button = app.screen.query_one("#trial", Button)
        app.screen.query_one("#review-body").scroll_to_widget(button, animate=False)
        await pilot.pause()
        button.press()
        await pilot.pause(0.3)
        assert ran == [target], "the trial did not run on the file the review saved"
        assert job_from_dict(read_toml(target)).job.name == "orbit_v1"
        assert "wanlora trial" in screen_text(app)


async def test_review_without_a_gpu_offers_no_trial(home: Path, clips: Path) -> None:
    app = WanloraApp(home=home, start="wizard", recipe="motion", gpus=[], watch_terminal=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        await next_step(pilot, "job")
        for step in ("model", "quantization", "multistage", "target", "save", "training", "advanced", "datasets"):
            await next_step(pilot, step)
        await type_into(pilot, "datasets[0].folder", str(clips))
        await next_step(pilot, "sample")
        await next_step(pilot, "scan")
        await pilot.app.workers.wait_for_complete()
        await next_step(pilot, "review")
        assert not app.screen.query("#trial")
