"""Layering defaults → recipe → tier → user, each value's origin, tier detection, round trips."""

from __future__ import annotations

import tomllib

import pytest
from wanlora.engine.config import gpu
from wanlora.engine.config.findings import JobError
from wanlora.engine.config.io import dump_job, job_from_dict, load_job, parse_toml
from wanlora.engine.config.presets import list_recipes, load_recipe, load_tiers, resolve, resolve_file
from wanlora.engine.config.schema import VRAM_TIERS, Job
from wanlora.engine.estimate import peak_vram
from wanlora.tui.commands.show import render

USER = {"job": {"preset": "character", "vram_tier": 24},
        "training": {"steps": 3000},
        "datasets": [{"folder": "/a", "num_frames": 33}, {"folder": "/b"}],
        "sample": {"prompts": [{"prompt": "p", "ctrl_img": "/c.png"}]}}


def test_each_value_says_where_it_came_from():
    r = resolve(USER)
    o = r.origins
    assert (r.recipe, r.tier, r.tier_source) == ("character", 24, "declared")
    assert (r.job.training.steps, o["training.steps"]) == (3000, "user")
    assert (r.job.training.timestep_type, o["training.timestep_type"]) == ("sigmoid", "recipe")
    assert (r.job.training.dop.preservation_class, o["training.dop.preservation_class"]) == ("person", "recipe")
    assert (r.job.model.low_vram, o["model.low_vram"]) == (True, "tier")
    assert (r.job.quantization.transformer, o["quantization.transformer"]) == ("nf4", "tier")
    assert (r.job.training.optimizer, o["training.optimizer"]) == ("adamw", "default")
    # dataset defaults apply to every [[datasets]] entry; the user's own value wins in its entry only
    assert (r.job.datasets[0].num_frames, o["datasets[0].num_frames"]) == (33, "user")
    assert (r.job.datasets[1].num_frames, o["datasets[1].num_frames"]) == (41, "tier")
    assert o["datasets[1].caption_dropout"] == "recipe" and o["datasets[1].folder"] == "user"
    assert o["sample.prompts[0].ctrl_img"] == "user" and o["sample.prompts[0].neg"] == "default"
    # every key the job has is accounted for
    assert set(o.values()) <= {"default", "recipe", "tier", "user"}
    assert "target.alpha" in o and "datasets[1].resolutions" in o


def test_tier_wins_over_recipe_and_user_wins_over_both():
    r = resolve({"job": {"preset": "style", "vram_tier": 24}, "datasets": [{"folder": "/a"}]})
    assert load_recipe("style")["dataset"]["resolutions"] == [512, 768]
    assert (r.job.datasets[0].resolutions, r.origins["datasets[0].resolutions"]) == ([512], "tier")
    mine = resolve({"job": {"preset": "style", "vram_tier": 24},
                    "datasets": [{"folder": "/a", "resolutions": [512, 768]}], "model": {"low_vram": False}})
    assert mine.job.datasets[0].resolutions == [512, 768] and mine.origins["datasets[0].resolutions"] == "user"
    assert mine.job.model.low_vram is False and mine.origins["model.low_vram"] == "user"


def test_custom_preset_applies_no_recipe():
    r = resolve({"job": {"vram_tier": 80}, "datasets": [{"folder": "/a"}]})
    assert r.recipe is None
    assert "recipe" not in r.origins.values()
    assert r.job.training.timestep_bias == "balanced"


def test_recipe_argument_is_recorded_in_the_job():
    r = resolve({"datasets": [{"folder": "/a"}]}, recipe="motion", tier=80)
    assert r.job.job.preset == "motion" and r.origins["job.preset"] == "recipe"
    with pytest.raises(JobError) as e:
        resolve({}, recipe="dance")
    assert e.value.findings[0].key == "job.preset"


def test_auto_tier_uses_detected_vram():
    r = resolve({"datasets": [{"folder": "/a"}]}, detected_vram_gb=79.2)
    assert (r.tier, r.tier_source) == (80, "detected")
    assert r.job.quantization.transformer == "fp8" and r.origins["quantization.transformer"] == "tier"
    assert any("79.2 GiB" in f.message for f in r.findings)


@pytest.mark.skipif(bool(gpu.detect_gpus()), reason="this machine has a GPU, so auto finds a tier")
def test_auto_tier_without_a_gpu_applies_no_tier_and_says_so():
    r = resolve({"datasets": [{"folder": "/a"}]})
    assert r.tier is None and "tier" not in r.origins.values()
    (f,) = r.findings
    assert f.level == "info" and f.key == "job.vram_tier" and "vram_tier" in f.fix


def test_pick_tier_is_the_largest_that_fits_real_cards():
    # free GiB as NVML reports them: RTX 3060, 4090, 5090, A100-40GB, A6000, H100, H200
    cards = {11.6: 12, 23.6: 24, 31.4: 32, 39.4: 32, 47.5: 48, 79.2: 80, 140.4: 141, 6.0: 12}
    assert {free: gpu.pick_tier(free) for free in cards} == cards


def test_every_recipe_fits_every_tier():
    """The shipped preset data is consistent: each recipe × tier is a valid job whose estimate fits the tier."""
    for tier in VRAM_TIERS:
        for rec in [*list_recipes(), "custom"]:
            r = resolve({"datasets": [{"folder": "/a"}]}, recipe=rec, tier=tier)
            need = peak_vram(r.job).need_gib
            assert need <= tier * 0.97, f"{rec} on {tier} GB needs {need} GiB"
    assert sorted(load_tiers()) == sorted(VRAM_TIERS)


def test_round_trip_load_dump(tmp_path):
    job = resolve(USER).job
    assert job_from_dict(parse_toml(dump_job(job))) == job
    p = tmp_path / "j.toml"
    p.write_text(dump_job(job))
    once = dump_job(load_job(p))
    p.write_text(once)
    assert dump_job(load_job(p)) == once


def test_show_output_is_toml_that_freezes_the_resolved_job(tmp_path):
    r = resolve(USER)
    text = render(r.job.model_dump(mode="json"), r.origins)
    assert "steps = 3000" in text and "# user" in text and "# tier" in text and "# recipe" in text
    assert Job.model_validate(tomllib.loads(text)) == r.job
    p = tmp_path / "frozen.toml"
    p.write_text(text)
    frozen = resolve_file(p)
    assert frozen.job == r.job and set(frozen.origins.values()) <= {"user", "default"}


def test_explicit_recipe_and_tier_replace_the_files_choice():
    r = resolve({"job": {"preset": "style", "vram_tier": 80}, "datasets": [{"folder": "/a"}]},
                recipe="character", tier=24)
    assert (r.recipe, r.tier) == ("character", 24)
    assert (r.job.job.preset, r.origins["job.preset"]) == ("character", "recipe")
    assert (r.job.job.vram_tier, r.origins["job.vram_tier"]) == (24, "tier")
    assert r.job.training.timestep_type == "sigmoid" and r.job.datasets[0].resolutions == [512]
