"""Issue #27, a newcomer's first day (round 3): the CLI's text agrees with itself and fits the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wanlora.engine.data.captions import training_caption, trigger_rule
from wanlora.engine.data.synthetic import write_clips
from wanlora.tui.cli import main


def _job(tmp: Path, *, trigger: str = "", caption: str = "[trigger] orbit around the subject") -> Path:
    clips = tmp / "clips"
    write_clips(clips, n=10, num_frames=24, fps=16.0, caption=caption)
    p = tmp / "job.toml"
    p.write_text(f'[job]\nname = "t"\npreset = "motion"\nvram_tier = 80\ntrigger_word = "{trigger}"\n'
                 f'[[datasets]]\nfolder = "{clips}"\nnum_frames = 21\n', encoding="utf-8")
    return p


def test_show_and_validate_say_the_same_about_trigger_without_a_trigger_word(tmp_path: Path, capsys) -> None:
    """One rule: with trigger_word empty, [trigger] is removed (what the trainer does), in show and validate."""
    job = _job(tmp_path)
    rule = trigger_rule("", True)
    assert training_caption("[trigger] orbit around the subject", "") == "orbit around the subject"
    assert "removed" in rule  # the rule describes what the trainer does
    assert main(["show", str(job)]) == 0
    shown = capsys.readouterr().out
    assert f"# trigger: {rule}" in shown
    assert main(["validate", str(job), "--json"]) == 1
    (err,) = [f for f in json.loads(capsys.readouterr().out)["findings"] if f["key"] == "job.trigger_word"]
    assert err["level"] == "error" and rule in err["message"] and "literal" not in err["message"]
    # with a word, both describe the replacement
    assert "'sks' replaces [trigger]" in trigger_rule("sks", True)


@pytest.mark.parametrize("columns", [80, 60])
def test_validate_wraps_at_the_terminal_width_on_word_boundaries(tmp_path: Path, capsys, monkeypatch,
                                                                 columns: int) -> None:
    job = _job(tmp_path)  # the [trigger] error has a long message and fix
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["validate", str(job)]) == 1
    out = capsys.readouterr().out.splitlines()
    # wider than the terminal only where one word (a long path) cannot be broken
    assert out and all(len(ln) <= columns or len(ln.split()) == 1 for ln in out), [ln for ln in out if len(ln) > columns]
    assert main(["validate", str(job), "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    words = " ".join(out).split()
    for f in findings:  # every word of every message arrives whole (nothing cut mid-word)
        text = f["message"].split()
        assert any(words[i:i + len(text)] == text for i in range(len(words))), f["message"]


def test_the_demo_job_validates_without_warnings(tmp_path: Path) -> None:
    """The first job a newcomer submits (`wanlora submit <home>/demo/job/job.toml`) draws no warning."""
    from wanlora.engine.checks.validate import check_file
    from wanlora.engine.train.demo import prepare_demo

    job_dir = prepare_demo(tmp_path)
    resolved, findings = check_file(job_dir / "job.toml", machine=False)
    assert resolved is not None
    assert [str(f) for f in findings if f.level != "info"] == []


# what a tip under each field must be about (a word of its topic), and topics it must not bring
TIP_TOPIC = {
    "advanced.differential_guidance": ("differential guidance", ("dop", "bucket", "frames")),
    "training.dop.enabled": ("dop", ("differential", "bucket", "frames")),
    "datasets[0].caption_dropout": ("caption dropout", ("bucket", "frames", "dop", "differential")),
    "datasets[0].num_frames": ("frames", ("dop", "differential")),
    "datasets[0].resolutions": ("buckets", ("dop", "differential")),
}


@pytest.mark.parametrize("recipe", ["motion", "style", "character"])
def test_the_wizards_tips_sit_under_the_fields_they_are_about(recipe: str) -> None:
    from wanlora.tui.wizard_state import advice_for

    shown = 0
    for key, (topic, foreign) in TIP_TOPIC.items():
        tip = advice_for(recipe, key).lower()
        if tip:
            shown += 1
            assert topic in tip and not any(f in tip for f in foreign), (recipe, key, tip)
    assert shown >= 3  # the recipes do give tips for these fields
