"""The demo run: synthetic clips + the tiny model + a short job, used by ``wanlora demo`` and the tests.

The synthetic captions read ``[trigger] a red square moving right``, so the demo job sets a trigger word
(``DEMO_TRIGGER``): a newcomer who reuses the clips with any recipe trains on the same text the demo did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wanlora.engine.config import jobdir
from wanlora.engine.config.io import job_from_dict, save_job
from wanlora.engine.config.schema import Job

DEMO_TRIGGER = "sks"  # the synthetic captions start with [trigger]; "sks" is in the tiny tokenizer's vocabulary


def demo_job_dict(clips: Path, model: Path, *, steps: int = 40, name: str = "wanlora_demo",
                  num_frames: int = 9, resolution: int = 64, **overrides: Any) -> dict[str, Any]:
    """A job that trains both experts of the tiny model on the clips in a couple of minutes on a CPU."""
    d: dict[str, Any] = {
        "job": {"name": name, "trigger_word": DEMO_TRIGGER, "preset": "motion"},
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


def prepare_demo(home: Path, *, steps: int = 40, n_clips: int = 10, model: Path | None = None) -> Path:
    """Write clips, build (or reuse) the tiny model, write the job folder; returns the job folder.

    The first job a newcomer submits must validate clean: 10 clips (validate warns below 10) and 9 consecutive
    frames at the clips' 16 fps (``frame_sampling = "fps"``: the 1.5 s clips spread evenly over 9 frames would
    play 2.7x too fast, which validate rightly warns about)."""
    from wanlora.engine.data.synthetic import write_clips
    from wanlora.engine.model.tiny import ensure_tiny_model

    home = Path(home)
    clips = home / "demo" / "clips"
    if not any(clips.glob("*.mp4")):
        write_clips(clips, n=n_clips, num_frames=24, size=(64, 64), fps=16.0, captions=True)
    held, ctrl = _demo_eval_and_ctrl(home / "demo", clips)
    model = ensure_tiny_model(model or home / "models" / "tiny-wan22-i2v")
    d = demo_job_dict(clips, model, steps=steps)
    d["datasets"][0]["frame_sampling"] = "fps"
    # a held-out clip (eval loss at every save) and a preview prompt: `wanlora compare` works on the demo job
    d["datasets"].append({"folder": str(held), "resolutions": [64], "num_frames": 9, "is_eval": True,
                          "frame_sampling": "fps"})
    d["sample"] = {"width": 64, "height": 64, "num_frames": 9, "steps": 4, "fps": 8,
                   "prompts": [{"prompt": "a red square moving right", "ctrl_img": str(ctrl)}]}
    return write_job_dir(home / "demo" / "job", d)


def _demo_eval_and_ctrl(demo: Path, clips: Path) -> tuple[Path, Path]:
    """One held-out clip (another seed) and a control image (its first frame) for the demo job."""
    from PIL import Image
    from wanlora.engine.data.decode import read_video_frames
    from wanlora.engine.data.synthetic import write_clips

    held, ctrl = demo / "eval", demo / "ctrl.png"
    if not any(held.glob("*.mp4")):
        write_clips(held, n=1, num_frames=24, size=(64, 64), fps=16.0, captions=True, seed=7, prefix="held")
    if not ctrl.is_file():
        Image.fromarray(read_video_frames(sorted(held.glob("*.mp4"))[0], [0])[0]).save(ctrl)
    return held, ctrl
