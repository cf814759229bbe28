"""Every error of SPEC §4: a bad file whose finding names the key and says the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wanlora.engine.checks.validate import check_file, nearest_valid_frames
from wanlora.engine.config.findings import Finding
from wanlora.engine.data.synthetic import write_bad_files, write_clips

from tests.engine.conftest import clean_job
from tests.privileges import run_owner_only


def errors_by_key(path: Path) -> dict[str, Finding]:
    _, findings = check_file(path)
    return {f.key: f for f in findings if f.level == "error"}


def test_clean_job_has_no_error_or_warning(job_file, ten_clips):
    resolved, findings = check_file(job_file(clean_job(ten_clips)))
    assert resolved is not None
    assert [f for f in findings if f.level != "info"] == []


@pytest.mark.parametrize(("frames", "fix"), [(40, "41"), (39, "37 or 41"), (2, "1"), (80, "81")])
def test_num_frames_not_4n_plus_1(job_file, ten_clips, frames, fix):
    p = job_file(clean_job(ten_clips).replace("num_frames = 21", f"num_frames = {frames}"))
    f = errors_by_key(p)["datasets[0].num_frames"]
    assert str(frames) in f.message and f"use num_frames = {fix}" in f.fix


def test_nearest_valid_frames_is_the_closest_4n_plus_1():
    for n in range(1, 120):
        near = nearest_valid_frames(n)
        dist = min(abs(v - n) for v in near)
        assert all((v - 1) % 4 == 0 for v in near)
        assert dist <= 2 and all(abs(v - n) == dist for v in near)


def test_sample_prompt_without_ctrl_img(job_file, ten_clips):
    p = job_file(clean_job(ten_clips) + '[sample]\nenabled = true\n[[sample.prompts]]\nprompt = "orbit"\n')
    f = errors_by_key(p)["sample.prompts[0].ctrl_img"]
    assert "36" in f.message and "ctrl_img" in f.fix


def test_sample_ctrl_img_missing_or_not_an_image(job_file, ten_clips, tmp_path, ctrl_png):
    txt = tmp_path / "notes.png"
    txt.write_text("not a picture")
    body = clean_job(ten_clips) + "[sample]\nenabled = true\n"
    for img in (tmp_path / "nope.png", txt, ctrl_png):
        body += f'[[sample.prompts]]\nprompt = "orbit"\nctrl_img = "{img}"\n'
    errs = errors_by_key(job_file(body))
    assert "file not found" in errs["sample.prompts[0].ctrl_img"].message
    assert "not an image" in errs["sample.prompts[1].ctrl_img"].message
    assert "sample.prompts[2].ctrl_img" not in errs  # a real PNG passes


def test_missing_ctrl_img_is_only_a_warning_when_sampling_is_off(job_file, ten_clips):
    p = job_file(clean_job(ten_clips) + '[[sample.prompts]]\nprompt = "orbit"\n')
    _, findings = check_file(p)
    levels = {f.level for f in findings if f.key == "sample.prompts[0].ctrl_img"}
    assert levels == {"warning"}


def test_neither_expert_trained(job_file, ten_clips):
    p = job_file(clean_job(ten_clips) + "[multistage]\nhigh_noise = false\nlow_noise = false\n")
    f = errors_by_key(p)["multistage.high_noise.train"]
    assert "high_noise = true" in f.fix


def test_trigger_in_captions_prompts_and_default_caption_without_trigger_word(job_file, tmp_path, ctrl_png):
    d = tmp_path / "trig"
    write_clips(d, n=2, num_frames=24, caption="[trigger] orbit")
    body = clean_job(d).replace(f'folder = "{d}"', f'folder = "{d}"\ndefault_caption = "[trigger] moving"')
    body += f'[[sample.prompts]]\nprompt = "[trigger] orbit"\nctrl_img = "{ctrl_png}"\n'
    f = errors_by_key(job_file(body))["job.trigger_word"]
    assert "datasets[0].default_caption" in f.message
    assert "2 caption file(s)" in f.message and "clip_000.txt" in f.message
    assert "sample.prompts[0].prompt" in f.message
    assert "trigger_word" in f.fix
    fixed = job_file(body.replace('name = "clean"', 'name = "clean"\ntrigger_word = "wcam"'), "fixed.toml")
    assert "job.trigger_word" not in errors_by_key(fixed)


def test_dataset_folder_missing_empty_or_without_usable_clips(job_file, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    write_bad_files(bad)
    body = clean_job(tmp_path / "nowhere")
    for folder in (empty, bad):
        body += f'[[datasets]]\nfolder = "{folder}"\nnum_frames = 21\n'
    body += '[[datasets]]\nnum_frames = 21\n'
    errs = errors_by_key(job_file(body))
    assert "does not exist" in errs["datasets[0].folder"].message
    assert "no usable clip" in errs["datasets[1].folder"].message
    assert "empty.mp4" in errs["datasets[2].folder"].message and "truncated.mp4" in errs["datasets[2].folder"].message
    assert "folder =" in errs["datasets[3].folder"].fix


def test_dataset_folder_unreadable(job_file, tmp_path):
    """A mode-0 folder: checked in a child without root's override capabilities (CI runs as root)."""
    d = tmp_path / "locked"
    write_clips(d, n=1)
    job = job_file(clean_job(d))
    d.chmod(0)
    try:
        out = run_owner_only(
            "import json; from wanlora.engine.checks.validate import check_file\n"
            f"_, fs = check_file({str(job)!r})\n"
            "print(json.dumps([[f.key, f.message, f.fix] for f in fs if f.level == 'error']))")
    finally:
        d.chmod(0o755)
    errs = {k: (m, fix) for k, m, fix in json.loads(out)}
    message, fix = errs["datasets[0].folder"]
    assert "permission" in message.lower() and "chmod" in fix


def test_no_dataset_at_all(job_file):
    f = errors_by_key(job_file('[job]\nname = "x"\nvram_tier = 80\n'))["datasets"]
    assert "[[datasets]]" in f.fix


@pytest.mark.parametrize(("snippet", "key", "fix_part"), [
    ("[training]\nlearnig_rate = 1e-4\n", "training.learnig_rate", "training.learning_rate"),
    ("[traning]\nsteps = 10\n", "traning", "training"),
    ("[target]\nrank = 0\n", "target.rank", "at least 1"),
    ("[training]\nlearning_rate = 0.5\n", "training.learning_rate", "at most 0.01"),
    ('[training]\nsteps = "many"\n', "training.steps", "whole number"),
    ("[sample]\nwidth = 500\n", "sample.width", "multiple of 16"),
    ('[job]\nvram_tier = "24"\n', "job.vram_tier", "write 24 without quotes"),
])
def test_schema_errors_name_the_key_and_fix(job_file, ten_clips, snippet, key, fix_part):
    body = clean_job(ten_clips)
    if snippet.startswith("[job]"):
        body = body.replace("vram_tier = 80", snippet.split("\n")[1])
    else:
        body = snippet + body
    resolved, findings = check_file(job_file(body))
    assert resolved is None
    f = {f.key: f for f in findings}[key]
    assert fix_part in f.fix


def test_resolution_not_multiple_of_16_suggests_nearest(job_file, ten_clips):
    p = job_file(clean_job(ten_clips).replace("num_frames = 21", "num_frames = 21\nresolutions = [500]"))
    _, findings = check_file(p)
    (f,) = [f for f in findings if f.key == "datasets[0].resolutions"]
    assert "500" in f.message and f.fix == "use 496"


def test_misspelt_key_in_a_list_keeps_its_index(job_file, ten_clips):
    p = job_file(clean_job(ten_clips).replace("num_frames = 21", "num_frame = 21"))
    _, findings = check_file(p)
    (f,) = [f for f in findings if f.level == "error"]  # the rest of the file is still checked (warnings)
    assert f.key == "datasets[0].num_frame" and "`datasets[0].num_frames`" in f.fix


def test_broken_toml_is_a_finding_not_an_exception(job_file):
    resolved, findings = check_file(job_file('[job]\nname = "x\n'))
    assert resolved is None and findings[0].level == "error" and "TOML" in findings[0].message


def test_unload_text_encoder_with_captions_or_dop(job_file, ten_clips):
    body = clean_job(ten_clips) + "[training]\nunload_text_encoder = true\n"
    f = errors_by_key(job_file(body))["training.unload_text_encoder"]
    assert "10 per-clip caption" in f.message and "unload_text_encoder = false" in f.fix
    dop = body + "[training.dop]\nenabled = true\n"
    _, findings = check_file(job_file(dop, "dop.toml"))
    msgs = [f.message for f in findings if f.key == "training.unload_text_encoder" and f.level == "error"]
    assert len(msgs) == 2 and any("DOP" in m for m in msgs)
