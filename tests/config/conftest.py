"""Real job files, clip folders and images for the Foundation tests (tiny, written per test or per session)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from wanlora.engine.data.synthetic import write_clips


@pytest.fixture(scope="session")
def ten_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 captioned 16 fps clips of 24 frames (1.5 s): a clean motion dataset for 21-frame training."""
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
