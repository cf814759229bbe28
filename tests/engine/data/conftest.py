"""Real little mp4 folders shared by the data-layer tests (written once per session: ~0.1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest
from wanlora.engine.data.synthetic import write_bad_files, write_clips


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 captioned 16 fps clips of 24 frames, 2 stills, one 48-frame 24 fps clip without caption, 2 bad files."""
    d = tmp_path_factory.mktemp("clips")
    write_clips(d, n=4, num_frames=24, fps=16.0, images=2)
    write_clips(d, n=1, num_frames=48, fps=24.0, size=(96, 64), captions=False, prefix="long", seed=7)
    write_bad_files(d)
    (d / "notes.md").write_text("not media\n")
    return d
