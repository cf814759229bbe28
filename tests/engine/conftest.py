"""Shared fixtures for the engine tests (every folder under tests/engine/): one tiny Wan 2.2 I2V model per
session (built offline, ~2 s), real clips, and the job files the config and check tests write."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wanlora.engine.model.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-wan22-i2v")


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model: Path):
    from diffusers import WanImageToVideoPipeline

    return WanImageToVideoPipeline.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real 64×64 mp4s of a red square moving right, with captions."""
    from wanlora.engine.data.synthetic import write_clips

    folder = tmp_path_factory.mktemp("clips")
    write_clips(folder, n=4, num_frames=24, size=(64, 64), fps=16.0, captions=True)
    return folder


def make_job_dir(tmp: Path, clips: Path, model: Path, **overrides) -> Path:
    """A job folder for the tiny model (see engine.train.demo.demo_job_dict for the keys)."""
    from wanlora.engine.train.demo import demo_job_dict, write_job_dir

    return write_job_dir(tmp / "job", demo_job_dict(clips, model, **overrides))


@pytest.fixture
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the real wanlora home (read-only fallback caches land there). The recipe-feature tests
    (caches, per-expert settings, DOP/EMA maths, previews) ask for it with ``pytest.mark.usefixtures``."""
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Real job files, clip folders and images for the config and check tests (tiny, written per test or per session).


@pytest.fixture(scope="session")
def ten_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 captioned 16 fps clips of 24 frames (1.5 s): a clean motion dataset for 21-frame training."""
    from wanlora.engine.data.synthetic import write_clips

    d = tmp_path_factory.mktemp("ten")
    write_clips(d, n=10, num_frames=24, fps=16.0, caption="orbit 360 around the subject")
    return d


@pytest.fixture(scope="session")
def ctrl_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    p = tmp_path_factory.mktemp("ctrl") / "first.png"
    Image.new("RGB", (32, 32), (120, 40, 40)).save(p)
    return p


@pytest.fixture
def job_file(tmp_path: Path) -> Callable[[str], Path]:
    """Write a job TOML into tmp_path and return its path."""

    def write(text: str, name: str = "job.toml") -> Path:
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        return p

    return write


def clean_job(folder: Path, extra: str = "") -> str:
    """A motion job on the 80 GB tier that passes every check (21 frames fit the 1.5 s clips)."""
    return f'''
[job]
name = "clean"
preset = "motion"
vram_tier = 80
{extra}
[[datasets]]
folder = "{folder}"
num_frames = 21
'''


def previewing_job(clips: Path, model: Path, tmp: Path, preview_steps: int):
    """A 40-step one-expert tiny job that renders one 64² preview of ``preview_steps`` steps every 20 steps."""
    from PIL import Image
    from wanlora.engine.config.schema import Job
    from wanlora.engine.train.demo import demo_job_dict

    ctrl = tmp / "ctrl.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(ctrl)
    d = demo_job_dict(clips, model, steps=40, multistage__low_noise=False)
    d["sample"] = {"enabled": True, "every": 20, "steps": preview_steps, "width": 64, "height": 64, "num_frames": 5,
                   "prompts": [{"prompt": "a red square", "ctrl_img": str(ctrl)}]}
    return Job.model_validate(d)
