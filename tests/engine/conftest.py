"""Shared fixtures for the engine tests: one tiny Wan 2.2 I2V model per session (built offline, ~2 s)."""

from __future__ import annotations

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
