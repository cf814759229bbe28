"""ai-toolkit configs written the way the guide sets each recipe up → our job files."""

from __future__ import annotations

from pathlib import Path

import pytest
from wanlora.engine.config.aitk import convert, convert_file, to_toml
from wanlora.engine.config.findings import JobError
from wanlora.engine.config.io import job_from_dict, parse_toml

FIX = Path(__file__).parent / "fixtures"


def dropped_keys(conv) -> set[str]:
    return {k for k, _, _ in conv.dropped}


@pytest.mark.parametrize("name", ["motion", "style", "character"])
def test_each_guide_config_converts_to_a_valid_job_that_lists_what_it_left_out(name):
    conv = convert_file(FIX / f"aitk_{name}.yaml")
    text = to_toml(conv)
    job = job_from_dict(parse_toml(text))  # the written file (comments included) loads
    assert job.job.name.startswith("wan_i2v_")
    assert "config.process[0].training_folder" in dropped_keys(conv)
    for key, _, why in conv.dropped:
        assert f"#   - {key} = " in text and why in text  # nothing dropped silently


def test_motion_4bit_ara_becomes_nf4_with_recovery_adapter():
    conv = convert_file(FIX / "aitk_motion.yaml")
    job = job_from_dict(conv.job)
    assert job.quantization.transformer == "nf4"
    assert job.quantization.recovery_adapter.endswith("wan22_14b_i2v_torchao_uint4.safetensors")
    assert (job.model.low_vram, job.multistage.switch_every, job.training.optimizer) == (True, 10, "adamw8bit")
    assert job.training.learning_rate == pytest.approx(1e-4) and job.training.weight_decay == pytest.approx(1e-4)
    assert job.datasets[0].frame_sampling == "even" and job.sample.enabled is False
    assert [p.ctrl_img for p in job.sample.prompts] == ["/data/ctrl/castle.png", "/data/ctrl/city.png"]
    assert job.job.gpus == [0]


def test_style_alpha_prompt_flags_and_renames():
    conv = convert_file(FIX / "aitk_style.yaml")
    job = job_from_dict(conv.job)
    assert job.job.name == "wan_i2v_style_neon" and job.job.gpus == [1]
    assert (job.target.rank, job.target.alpha) == (32, 32.0)  # ai-toolkit ignores linear_alpha for Wan
    assert any("linear_alpha" in n for n in conv.notes)
    assert (job.training.timestep_type, job.training.timestep_bias) == ("shift", "high_noise")
    assert job.training.dop.enabled and job.training.dop.preservation_class == "scene"
    assert job.advanced.differential_guidance and job.advanced.differential_guidance_scale == 2.0
    assert job.datasets[0].flip_x and job.save.dtype == "fp16" and job.save.max_keep == 6
    p0, p1 = job.sample.prompts
    assert (p0.prompt, p0.ctrl_img, p0.seed) == ("[trigger] a street at night, rain", "/data/ctrl/street.png", 7)
    assert p1.ctrl_img == "/data/ctrl/woman.png"
    assert {"datasets[0].num_repeats", "model.vae_tiling"} <= dropped_keys(conv)


def test_character_fps_sampling_regularization_and_per_prompt_settings():
    conv = convert_file(FIX / "aitk_character.yaml")
    job = job_from_dict(conv.job)
    assert job.datasets[0].frame_sampling == "fps" and job.datasets[0].cache_latents
    assert (job.datasets[1].is_regularization, job.datasets[1].weight, job.datasets[1].resolutions) == (True, 0.5, [512])
    assert job.training.ema and job.training.cache_text_embeddings and job.advanced.compile
    assert job.multistage.switch_every == 1 and job.job.trigger_word == "frung"
    assert job.sample.enabled  # ai-toolkit samples unless disable_sampling: the crash the guide describes
    assert job.sample.prompts[1].ctrl_img == ""
    assert {"datasets[0].fps", "sample.samples[0].width"} <= dropped_keys(conv)


def test_not_an_i2v_config_is_refused_with_the_key():
    cfg = {"config": {"name": "t2v", "process": [{"model": {"arch": "wan22_14b"}}]}}
    with pytest.raises(JobError) as e:
        convert(cfg)
    assert e.value.findings[0].key == "model.arch"
    with pytest.raises(JobError) as e:
        convert({"steps": 3})
    assert "ai-toolkit" in e.value.findings[0].message


def test_unknown_keys_are_listed_not_dropped():
    cfg = {"config": {"process": [{"train": {"steps": 100, "magic_knob": 3}, "model": {"arch": "wan22_14b_i2v",
                                                                                  "model_kwargs": {"foo": 1}}}]}}
    conv = convert(cfg)
    assert {"train.magic_knob", "model.model_kwargs.foo"} <= dropped_keys(conv)
    assert conv.job["training"]["steps"] == 100
