"""`wanlora import-aitk` reproduces the run: the guide's three recipes, as their ai-toolkit configs say.

For each fixture the expected values below are what ai-toolkit itself trains with — the config's own
values, and for keys the config leaves out ai-toolkit's code defaults (read from ostris/ai-toolkit at
27a03a91: ``toolkit/config_modules.py`` TrainConfig/ModelConfig/NetworkConfig/SaveConfig/DatasetConfig/
SampleConfig; torch AdamW's weight_decay 0.01 via ``toolkit/optimizer.py``; alpha = rank for Wan's peft
LoRA, ``toolkit/lora_special.py``; the 0.875 boundary, ``extensions_built_in/diffusion_models/wan22/
wan22_14b_model.py``).  They are written out here by hand, not produced by the converter.  The converted
file, resolved under any VRAM tier, must give each value — or name the key in its notes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from wanlora.engine.config.aitk import convert_file, to_toml
from wanlora.engine.config.io import parse_toml
from wanlora.engine.config.presets import resolve
from wanlora.tui.wizard_state import get_path

FIX = Path(__file__).parent / "fixtures"
COMMON = {  # every Wan 2.2 I2V run of ai-toolkit
    "model.boundary_ratio": 0.875, "training.batch_size": 1, "training.gradient_accumulation": 1,
    "training.lr_scheduler": "constant", "training.max_grad_norm": 1.0, "training.gradient_checkpointing": True,
    "training.unload_text_encoder": False, "model.layer_offloading": False,
    "multistage.high_noise.train": True, "multistage.low_noise.train": True,
}
AITK_RUN = {
    "motion": {
        **COMMON, "job.trigger_word": "", "model.low_vram": True, "quantization.transformer": "nf4",
        "quantization.text_encoder": "fp8", "multistage.switch_every": 10, "target.rank": 16,
        "target.alpha": 16.0, "save.dtype": "bf16", "save.every": 250, "save.max_keep": 4,
        "training.learning_rate": 1e-4, "training.steps": 2000, "training.optimizer": "adamw8bit",
        "training.weight_decay": 1e-4, "training.timestep_type": "linear", "training.timestep_bias": "balanced",
        "training.ema": False, "training.cache_text_embeddings": False, "training.dop.enabled": False,
        "advanced.differential_guidance": False,
        "datasets[0].caption_dropout": 0.05, "datasets[0].resolutions": [512, 768], "datasets[0].num_frames": 41,
        "datasets[0].frame_sampling": "even", "datasets[0].flip_x": False, "datasets[0].cache_latents": False,
        "datasets[0].default_caption": "orbit 360 around the subject",
        "sample.enabled": False, "sample.every": 250, "sample.width": 768, "sample.num_frames": 41,
        "sample.guidance_scale": 3.5, "sample.steps": 25, "sample.seed": 42, "sample.walk_seed": True,
    },
    "style": {
        **COMMON, "job.trigger_word": "neonstyle", "job.inject_trigger": True, "model.low_vram": False,
        "quantization.transformer": "fp8", "quantization.text_encoder": "fp8", "multistage.switch_every": 10,
        "target.rank": 32, "target.alpha": 32.0, "save.dtype": "fp16", "save.every": 250, "save.max_keep": 6,
        "training.learning_rate": 1e-4, "training.steps": 2500, "training.optimizer": "adamw",
        "training.weight_decay": 0.01, "training.timestep_type": "shift", "training.timestep_bias": "high_noise",
        "training.ema": False, "training.cache_text_embeddings": False, "training.dop.enabled": True,
        "training.dop.multiplier": 1.0, "training.dop.preservation_class": "scene",
        "advanced.differential_guidance": True, "advanced.differential_guidance_scale": 2.0,
        "datasets[0].caption_dropout": 0.05, "datasets[0].resolutions": [512, 768], "datasets[0].num_frames": 33,
        "datasets[0].frame_sampling": "even", "datasets[0].flip_x": True, "datasets[0].flip_y": False,
        "datasets[0].num_repeats": 2,  # no wanlora equivalent: must be named
        "sample.enabled": True, "sample.every": 250, "sample.width": 768, "sample.height": 768,
        "sample.num_frames": 33, "sample.fps": 16, "sample.guidance_scale": 4.0, "sample.steps": 25,
        "sample.seed": 42, "sample.walk_seed": True,
    },
    "character": {
        **COMMON, "job.trigger_word": "frung", "job.inject_trigger": True, "model.low_vram": False,
        "quantization.transformer": "fp8", "quantization.text_encoder": "fp8", "multistage.switch_every": 1,
        "target.rank": 16, "target.alpha": 16.0, "save.dtype": "bf16", "save.every": 250, "save.max_keep": 4,
        "training.learning_rate": 1e-4, "training.steps": 3000, "training.optimizer": "adamw8bit",
        "training.weight_decay": 0.01, "training.timestep_type": "sigmoid", "training.timestep_bias": "balanced",
        "training.ema": True, "training.ema_decay": 0.99, "training.cache_text_embeddings": True,
        "training.dop.enabled": True, "training.dop.multiplier": 1.0, "training.dop.preservation_class": "person",
        "datasets[0].default_caption": "[trigger], young woman", "datasets[0].caption_dropout": 0.05,
        "datasets[0].cache_latents": True, "datasets[0].resolutions": [512, 768], "datasets[0].num_frames": 41,
        "datasets[0].frame_sampling": "fps", "datasets[0].fps": 24,  # ai-toolkit's 24 fps vs wanlora's 16: named
        "datasets[1].is_regularization": True, "datasets[1].weight": 0.5, "datasets[1].resolutions": [512],
        "datasets[1].num_frames": 41, "datasets[1].caption_dropout": 0.0, "datasets[1].frame_sampling": "even",
        "sample.enabled": True, "sample.every": 500, "sample.width": 768, "sample.num_frames": 41,
        "sample.fps": 16, "sample.guidance_scale": 3.5, "sample.steps": 25, "sample.seed": 42,
    },
}
_ABSENT = object()


@pytest.mark.parametrize("tier", [None, 24, 141])
@pytest.mark.parametrize("name", sorted(AITK_RUN))
def test_import_gives_the_settings_ai_toolkit_trains_with_or_names_the_difference(name: str, tier) -> None:
    conv = convert_file(FIX / f"aitk_{name}.yaml")
    text = to_toml(conv)
    header = text.split("\n\n", 1)[0]  # the notes, defaults and not-imported lines
    job = resolve(parse_toml(text), tier=tier).job
    named, same = [], []
    for key, want in AITK_RUN[name].items():
        got = get_path(job, key, _ABSENT)
        if got == "auto" and key == "model.boundary_ratio":
            got = 0.9  # the model's own (model_index.json), what "auto" resolves to for I2V A14B
        if got is not _ABSENT and got == want:
            same.append(key)
            continue
        bare = key.split("].", 1)[-1] if key.startswith("datasets[") else key
        assert key in header or bare in header, f"{name}: {key} is {got!r} here, ai-toolkit uses {want!r}, no note names it"
        named.append(key)
    assert set(named) <= {"model.boundary_ratio", "datasets[0].num_repeats", "datasets[0].fps"}, named
    assert "model.boundary_ratio" in named  # the one deliberate difference every Wan I2V import has


def test_absent_keys_take_ai_toolkit_defaults_not_ours() -> None:
    """A minimal ai-toolkit config: what ai-toolkit would run, each default with its note and source file."""
    from wanlora.engine.config.aitk import convert

    conv = convert({"config": {"name": "bare", "process": [{"model": {"arch": "wan22_14b_i2v", "name_or_path": "x/y"},
                                                            "datasets": [{"folder_path": "/d"}]}]}})
    job = resolve(conv.job, tier=24).job
    assert (job.training.steps, job.training.learning_rate, job.training.timestep_type) == (1000, 1e-6, "sigmoid")
    assert (job.multistage.switch_every, job.datasets[0].caption_dropout, job.datasets[0].num_frames) == (1, 0.0, 1)
    assert (job.datasets[0].resolutions, job.target.rank, job.save.every, job.save.dtype) == ([512], 4, 1000, "fp16")
    assert (job.quantization.transformer, job.model.low_vram, job.training.weight_decay) == ("none", False, 0.01)
    assert job.sample.enabled is False
    text = "\n".join(conv.defaults)
    for their_key in ("train.steps", "train.lr", "train.timestep_type", "train.switch_boundary_every",
                      "datasets[0].caption_dropout_rate", "datasets[0].resolution", "datasets[0].num_frames"):
        assert their_key in text, their_key
    assert "toolkit/config_modules.py" in text


def test_notes_for_weighted_timesteps_and_trigger_injection() -> None:
    from wanlora.engine.config.aitk import convert

    proc = {"trigger_word": "frung", "model": {"arch": "wan22_14b_i2v", "name_or_path": "x/y"},
            "train": {"timestep_type": "weighted", "noise_scheduler": "flowmatch"}}
    conv = convert({"config": {"name": "w", "process": [proc]}})
    notes = "\n".join(conv.notes)
    assert conv.job["training"]["timestep_type"] == "linear" and "loss weight" in notes and "lost" in notes
    assert "inject_trigger_into_prompt" in notes and conv.job["job"]["inject_trigger"] is True
    assert "0.875" in notes and "model.boundary_ratio" in notes
