"""Every warning and info line of SPEC §4, each naming its key and the guide's fix."""

from __future__ import annotations

import tomllib
from pathlib import Path

from wanlora.engine.checks.validate import check_file, validate_job
from wanlora.engine.config.findings import Finding
from wanlora.engine.config.presets import resolve
from wanlora.engine.data.synthetic import write_clips

from tests.engine.conftest import clean_job


def by_key(path: Path, level: str = "warning") -> dict[str, list[Finding]]:
    _, findings = check_file(path)
    out: dict[str, list[Finding]] = {}
    for f in findings:
        if f.level == level:
            out.setdefault(f.key, []).append(f)
    return out


def test_switch_every_below_10_with_low_vram(job_file, ten_clips):
    p = job_file(clean_job(ten_clips) + "[model]\nlow_vram = true\n[multistage]\nswitch_every = 1\n")
    (f,) = by_key(p)["multistage.switch_every"]
    assert "low_vram" in f.message and "10-50" in f.fix


def test_1024_and_81_frames_on_a_24gb_tier(job_file, ten_clips):
    body = clean_job(ten_clips).replace("vram_tier = 80", "vram_tier = 24").replace(
        "num_frames = 21", "num_frames = 81\nresolutions = [512, 1024]")
    w = by_key(job_file(body))
    assert any("[512]" in f.fix for f in w["datasets[0].resolutions"])
    assert any("41" in f.fix for f in w["datasets[0].num_frames"])


def test_peak_vram_above_the_gpu_shows_the_oom_ladder(job_file, ten_clips):
    body = clean_job(ten_clips).replace("vram_tier = 80", "vram_tier = 24").replace(
        "num_frames = 21", "num_frames = 41\nresolutions = [512, 768]")
    (f,) = [f for f in by_key(job_file(body))["datasets[0].num_frames"] if "peak VRAM" in f.message]
    assert "OOM ladder" in f.fix and "num_frames = 33" in f.fix
    # with a 141 GiB GPU the same job fits: no VRAM warning at all
    r = resolve(tomllib.loads(body))
    assert not [f for f in validate_job(r.job, vram_gb=140.0) if "peak VRAM" in f.message]


def test_flips_with_motion_and_character_but_not_style(job_file, ten_clips):
    body = clean_job(ten_clips).replace("num_frames = 21", "num_frames = 21\nflip_x = true")
    assert "reverses" in by_key(job_file(body))["datasets[0].flip_x"][0].message
    style = job_file(body.replace('preset = "motion"', 'preset = "style"'), "style.toml")
    assert "datasets[0].flip_x" not in by_key(style)


def test_fewer_than_10_clips(job_file, tmp_path):
    d = tmp_path / "few"
    write_clips(d, n=3, caption="orbit")
    (f,) = by_key(job_file(clean_job(d)))["datasets[0].folder"]
    assert "only 3 usable" in f.message and "10-30" in f.fix


def test_clips_without_captions_and_no_default_caption(job_file, tmp_path):
    d = tmp_path / "nocap"
    write_clips(d, n=10, captions=False)
    (f,) = by_key(job_file(clean_job(d)))["datasets[0].default_caption"]
    assert "10 of 10" in f.message and "default_caption" in f.fix
    with_default = clean_job(d).replace("num_frames = 21", 'num_frames = 21\ndefault_caption = "orbit"')
    assert "datasets[0].default_caption" not in by_key(job_file(with_default, "d.toml"))


def test_character_without_trigger_word(job_file, ten_clips):
    body = clean_job(ten_clips).replace('preset = "motion"', 'preset = "character"')
    (f,) = by_key(job_file(body))["job.trigger_word"]
    assert "trigger_word" in f.fix


def test_rank_32_with_1024_and_81_frames(job_file, ten_clips):
    body = clean_job(ten_clips).replace("num_frames = 21", "num_frames = 81\nresolutions = [1024]")
    (f,) = by_key(job_file(body + "[target]\nrank = 32\n"))["target.rank"]
    assert "rank 16" in f.fix


def test_steps_beyond_4000(job_file, ten_clips):
    (f,) = by_key(job_file(clean_job(ten_clips) + "[training]\nsteps = 6000\n"))["training.steps"]
    assert "2000-3000" in f.fix


def test_even_sampling_squeeze_suggests_fps_or_trimming(job_file, tmp_path):
    d = tmp_path / "long"
    write_clips(d, n=10, num_frames=72, fps=24.0, caption="orbit")  # 3 s = 48 frames at 16 fps
    body = clean_job(d).replace("num_frames = 21", "num_frames = 9")
    (f,) = by_key(job_file(body))["datasets[0].frame_sampling"]
    assert "5.3x too fast" in f.message and 'frame_sampling = "fps"' in f.fix and "0.6 s" in f.fix
    fps = job_file(body.replace("num_frames = 9", 'num_frames = 9\nframe_sampling = "fps"'), "fps.toml")
    assert "datasets[0].frame_sampling" not in by_key(fps)


def test_fps_sampling_on_clips_too_short(job_file, ten_clips):
    body = clean_job(ten_clips).replace("num_frames = 21", 'num_frames = 41\nframe_sampling = "fps"')
    (f,) = by_key(job_file(body))["datasets[0].frame_sampling"]
    assert "shorter than 41 frames" in f.message and "num_frames to 21" in f.fix


def test_info_lines_for_caching_that_ai_toolkit_refuses(job_file, ten_clips):
    body = clean_job(ten_clips).replace("num_frames = 21", "num_frames = 21\ncache_latents = true")
    body = body.replace('name = "clean"', 'name = "clean"\ntrigger_word = "sks"')  # DOP needs a trigger
    body += "[training]\ncache_text_embeddings = true\n[training.dop]\nenabled = true\n"
    info = by_key(job_file(body), "info")
    (te,) = info["training.cache_text_embeddings"]
    assert "caption dropout and DOP" in te.message
    (lat,) = info["datasets[0].cache_latents"]
    assert "multi-frame" in lat.message
    assert not by_key(job_file(body), "error")


def test_a_bucket_past_the_measured_range_says_its_estimate_is_a_lower_bound(job_file, ten_clips):
    """121 frames at 1024² (126 976 tokens) is past the largest bucket measured to train (81 × 1024²): the user
    is told before renting, and pointed at `wanlora trial`; 81 × 1024² (measured) is not flagged."""
    base = clean_job(ten_clips).replace("vram_tier = 80", "vram_tier = 141")
    big = by_key(job_file(base.replace("num_frames = 21", "num_frames = 121\nresolutions = [512, 768, 1024]")))
    (f,) = [f for f in big["datasets[0].resolutions"] if "lower bound" in f.message]
    assert "1024x1024x121" in f.message and "126976 tokens" in f.message and "wanlora trial" in f.fix
    ok = by_key(job_file(base.replace("num_frames = 21", "num_frames = 81\nresolutions = [512, 768, 1024]"), "ok.toml"))
    assert not [f for g in ok.values() for f in g if "lower bound" in f.message]
