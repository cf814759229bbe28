"""The peak-VRAM and step-time estimator against the H100 measurements it was built from."""

from __future__ import annotations

import pytest
from wanlora.engine.config.presets import resolve
from wanlora.engine.estimate import oom_ladder, peak_vram, step_time, video_tokens


def job_for(frames: int, res: int, **sections):
    user = {"datasets": [{"folder": "/a", "num_frames": frames, "resolutions": [res]}], **sections}
    return resolve(user, tier=None if "job" in sections else 80).job


def test_tokens_follow_the_vae_and_patch_strides():
    assert video_tokens(41, 512, 512) == 11 * 32 * 32
    assert video_tokens(81, 480, 832) == 32760
    assert video_tokens(1, 512, 512) == 1024


@pytest.mark.parametrize(("frames", "res", "measured"), [(41, 512, 35.1), (41, 768, 44.9), (41, 1024, 58.5)])
def test_one_bf16_expert_matches_the_measured_peak(frames, res, measured):
    # measured with the LoRA and its optimizer state in bf16 (before fp32 masters became the default)
    job = job_for(frames, res, job={"vram_tier": 141}, model={"low_vram": True}, quantization={"transformer": "none"},
                  training={"cache_text_embeddings": True}, advanced={"lora_master_dtype": "bf16"})
    assert job.quantization.transformer == "none"
    assert peak_vram(job).peak_gib == pytest.approx(measured, abs=1.5)


def test_two_fp8_experts_match_the_measured_peak():
    job = job_for(41, 512, training={"cache_text_embeddings": True}, advanced={"lora_master_dtype": "bf16"})
    assert job.quantization.transformer == "fp8" and not job.model.low_vram
    assert peak_vram(job).peak_gib == pytest.approx(36.6, abs=1.5)


def test_h100_step_time_matches_the_baseline():
    job = job_for(41, 512, job={"vram_tier": 141}, datasets=[{"folder": "/a", "num_frames": 41, "resolutions": [512],
                                                              "cache_latents": True}], advanced={"compile": False},
                  quantization={"transformer": "none"})
    t = step_time(job, gpu_name="NVIDIA H100 80GB HBM3", calibration=[], budget_gib=40)  # fully checkpointed
    assert t.s_per_step == pytest.approx(3.2, rel=0.05)  # the eager diffusers + peft baseline
    assert "built-in" in t.source and t.hours == pytest.approx(3.2 * 2000 / 3600, rel=0.06)


def test_calibration_rows_replace_the_built_in_numbers():
    job = job_for(41, 512, job={"vram_tier": 141}, datasets=[{"folder": "/a", "num_frames": 41, "resolutions": [512],
                                                              "cache_latents": True}], advanced={"compile": False},
                  quantization={"transformer": "none"})
    row = {"gpu": "H100", "num_frames": 41, "width": 512, "height": 512, "s_per_step": 6.4}
    t = step_time(job, gpu_name="NVIDIA H100 80GB HBM3", calibration=[row])
    assert "calibrated" in t.source and t.s_per_step == pytest.approx(6.4, rel=0.02)
    other = step_time(job, gpu_name="NVIDIA H200", calibration=[row])  # no row for this GPU
    assert "built-in" in other.source


def test_oom_ladder_lowers_the_peak_until_it_fits():
    job = resolve({"datasets": [{"folder": "/a", "num_frames": 81, "resolutions": [512, 1024]}],
                   "training": {"batch_size": 2}}, tier=80).job
    before = peak_vram(job).need_gib
    ladder = oom_ladder(job, 23.0)
    assert [s.key for s in ladder][:2] == ["datasets[0].resolutions", "datasets[0].num_frames"]
    needs = [before] + [s.need_gib for s in ladder]
    assert all(a >= b for a, b in zip(needs, needs[1:], strict=False))
    assert ladder[-1].need_gib <= 23.0 and ladder[-2].need_gib > 23.0
    assert job.datasets[0].num_frames == 81  # the job itself is untouched


def test_rows_in_the_jobs_own_settings_win_and_repeats_count_at_their_fastest():
    """H200 trial rows: fp8 compute is 17 % faster than bf16 there, far more than the fixed factors say; an
    fp8 job is estimated from the fp8 rows (the fastest of two runs), a bf16 job from the bf16 row."""
    def job(q: str):
        return job_for(41, 512, job={"vram_tier": 141}, quantization={"transformer": q}, advanced={"compile": True},
                       datasets=[{"folder": "/a", "num_frames": 41, "resolutions": [512], "cache_latents": True}])
    shape = {"gpu": "NVIDIA H200", "num_frames": 41, "width": 512, "height": 512, "compile": True}
    rows = [{**shape, "transformer": "fp8", "s_per_step": 1.40}, {**shape, "transformer": "fp8", "s_per_step": 1.36},
            {**shape, "transformer": "none", "s_per_step": 1.65}]
    assert step_time(job("fp8"), gpu_name="NVIDIA H200", calibration=rows).s_per_step == pytest.approx(1.36, rel=0.01)
    assert step_time(job("none"), gpu_name="NVIDIA H200", calibration=rows).s_per_step == pytest.approx(1.65, rel=0.01)


def test_a_short_job_is_estimated_in_seconds_or_minutes_not_zero_hours(tmp_path):
    """Issue #27 item 2: a 20-step job printed "≈ 0.0 h" (hours were rounded to 0.1 before display)."""
    import subprocess
    import sys

    job = tmp_path / "short.toml"
    job.write_text('[job]\npreset = "motion"\nvram_tier = 80\n[training]\nsteps = 20\n[[datasets]]\nfolder = "/clips"\n')
    out = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "estimate", str(job), "--gpu", "H100"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("time on"))
    assert "0.0 h" not in line and ("s" in line.split("≈")[-1] or "min" in line.split("≈")[-1])
    steps = float(line.split("≈")[1].split("s/step")[0])
    total_s = steps * 20  # the figure shown must be the steps' own time, in seconds or minutes
    shown = line.split("≈")[-1].strip()
    value, unit = shown.split()[0], shown.split()[1]
    assert unit in ("s", "min")
    assert float(value) * (60 if unit == "min" else 1) == pytest.approx(total_s, rel=0.5, abs=30)
