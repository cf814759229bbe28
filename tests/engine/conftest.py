"""Shared fixtures for the engine tests: one tiny Wan 2.2 I2V model per session (built offline, ~2 s)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.model.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-wan22-i2v")


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model: Path):
    from diffusers import WanImageToVideoPipeline

    return WanImageToVideoPipeline.from_pretrained(tiny_model)
