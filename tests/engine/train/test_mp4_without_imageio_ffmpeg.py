"""Without imageio-ffmpeg (a wheels-only GPU box) every mp4 the product writes goes through PyAV, including
``wanlora compare``'s grid, whose frames arrive as a generator (issue #27 item 13)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from wanlora.engine.train.previews import write_mp4
from wanlora.engine.train.sheet import grid_frames


@pytest.fixture
def no_imageio_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # `import imageio_ffmpeg` raises ImportError


def _frames(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    f = np.zeros((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        f[i, :, i * 4:(i * 4) + 8] = 255  # a bar moving right
    return f


def _decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]


def test_compare_grid_generator_writes_through_pyav(tmp_path: Path, no_imageio_ffmpeg: None) -> None:
    videos = [[_frames(5), _frames(3)], [None, _frames(5)]]
    frames = grid_frames(videos, [["1000", "high"], ["2000", "low"]])
    assert not isinstance(frames, np.ndarray)  # what compare hands the writer
    out = write_mp4(frames, tmp_path / "grid.mp4", fps=16)
    got = _decoded(out)
    want = list(grid_frames(videos, [["1000", "high"], ["2000", "low"]]))
    assert len(got) == len(want) == 5 and got[0].shape == want[0].shape
    # H.264 at the writer's quality: the frames come back close to what went in (a bright bar stays bright)
    assert np.abs(got[2].astype(int) - want[2].astype(int)).mean() < 8


def test_preview_array_and_empty_input_through_pyav(tmp_path: Path, no_imageio_ffmpeg: None) -> None:
    out = write_mp4(_frames(4, 33, 49), tmp_path / "odd.mp4", fps=16)  # odd sides: cropped to even
    got = _decoded(out)
    assert len(got) == 4 and got[0].shape == (32, 48, 3)
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(iter(()), tmp_path / "none.mp4", fps=16)
    assert not list(tmp_path.glob(".none*")) and not (tmp_path / "none.mp4").exists()  # no temp file left
