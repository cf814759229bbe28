"""The demo run: synthetic clips + the tiny model + a short job, used by ``wanlora demo`` and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wanlora.engine.config import jobdir
from wanlora.engine.config.io import job_from_dict, save_job
from wanlora.engine.config.schema import Job

DEMO_CAPTION = "a red square moving right"


def demo_job_dict(clips: Path, model: Path, *, steps: int = 40, name: str = "wanlora_demo",
                  num_frames: int = 9, resolution: int = 64, **overrides: Any) -> dict[str, Any]:
    """A job that trains both experts of the tiny model on the clips in a couple of minutes on a CPU."""
    d: dict[str, Any] = {
        "job": {"name": name, "trigger_word": "", "preset": "motion"},
        "model": {"name_or_path": str(model)},
        "quantization": {"transformer": "none", "text_encoder": "none"},
        "multistage": {"high_noise": True, "low_noise": True, "switch_every": 5},
        "target": {"rank": 8, "alpha": 8, "modules": "attn+ffn"},
        "save": {"dtype": "bf16", "every": max(1, steps // 2), "max_keep": 2},
        "training": {"steps": steps, "learning_rate": 1e-3, "seed": 42, "gradient_checkpointing": True},
        "datasets": [{"folder": str(clips), "resolutions": [resolution], "num_frames": num_frames,
                      "caption_dropout": 0.0}],
    }
    for dotted, value in overrides.items():
        section, _, key = dotted.partition("__")
        d.setdefault(section, {})[key] = value
    return d


def write_job_dir(job_dir: Path, job: Job | dict[str, Any]) -> Path:
    """Create a job folder holding ``job.toml`` (what the daemon does before it starts a trainer)."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(job, dict):
        job = job_from_dict(job)
    save_job(job, job_dir / jobdir.JOB_TOML)
    return job_dir


def prepare_demo(home: Path, *, steps: int = 40, n_clips: int = 4, model: Path | None = None) -> Path:
    """Write clips, build (or reuse) the tiny model, write the job folder; returns the job folder."""
    from wanlora.engine.data.synthetic import write_clips
    from wanlora.engine.model.tiny import ensure_tiny_model

    home = Path(home)
    clips = home / "demo" / "clips"
    if not any(clips.glob("*.mp4")):  # captions without [trigger]: the demo job validates as written (submit it)
        write_clips(clips, n=n_clips, num_frames=24, size=(64, 64), fps=16.0, captions=True,
                    caption=DEMO_CAPTION)
    model = ensure_tiny_model(model or home / "models" / "tiny-wan22-i2v")
    return write_job_dir(home / "demo" / "job", demo_job_dict(clips, model, steps=steps))
