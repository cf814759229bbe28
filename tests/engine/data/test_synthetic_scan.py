"""synthetic clips are real, deterministic and learnable; scan reports folders the way a user needs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from wanlora.engine.data.decode import MediaError, probe_video, read_video_frames
from wanlora.engine.data.scan import ScanError, scan_file, scan_folder
from wanlora.engine.data.synthetic import clip_params, speed_px, square_x, write_bad_files, write_clips

from tests.privileges import run_owner_only


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_write_clips_deterministic_and_varied(tmp_path: Path) -> None:
    a = write_clips(tmp_path / "a", n=2, seed=3)
    b = write_clips(tmp_path / "b", n=2, seed=3)
    c = write_clips(tmp_path / "c", n=2, seed=4)
    assert [_md5(p) for p in a] == [_md5(p) for p in b]
    assert _md5(a[0]) != _md5(a[1])  # each clip differs
    assert _md5(a[0]) != _md5(c[0])  # and the seed matters
    assert a[0].with_suffix(".txt").read_text().strip() == "[trigger] a red square moving right"


def test_clip_decodes_to_a_square_moving_at_constant_speed(tmp_path: Path) -> None:
    (p,) = write_clips(tmp_path, n=1, num_frames=24, size=(64, 64), fps=16.0, seed=1)
    frames = read_video_frames(p, list(range(24)))
    assert frames.shape == (24, 64, 64, 3) and frames.dtype == np.uint8
    x0 = clip_params(0, (64, 64), seed=1)["x0"]
    xs = [square_x(f) for f in frames]
    assert xs == [float((x0 + i * speed_px(64)) % 64) for i in range(24)]


def test_images_and_uncaptioned(tmp_path: Path) -> None:
    paths = write_clips(tmp_path, n=1, images=2, captions=False)
    assert [p.suffix for p in paths] == [".mp4", ".png", ".png"]
    assert not list(tmp_path.glob("*.txt"))


def test_write_clips_rejects_odd_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_clips(tmp_path, n=1, size=(63, 64))


def test_bad_files_are_unreadable_not_crashing(tmp_path: Path) -> None:
    empty, truncated = write_bad_files(tmp_path)
    assert empty.stat().st_size == 0 and truncated.stat().st_size > 0
    with pytest.raises(MediaError, match="empty.mp4: empty file"):
        probe_video(empty)
    with pytest.raises(MediaError, match="truncated.mp4"):
        probe_video(truncated)


def test_scan_folder_report(clip_folder: Path) -> None:
    r = scan_folder(clip_folder)
    names = {c.path.name: c for c in r.items}
    assert set(names) == {
        "clip_000.mp4", "clip_001.mp4", "clip_002.mp4", "clip_003.mp4",
        "clip_still_000.png", "clip_still_001.png", "long_000.mp4", "empty.mp4", "truncated.mp4",
    }
    c = names["clip_000.mp4"]
    assert (c.kind, c.frames, c.fps, c.width, c.height) == ("video", 24, 16.0, 64, 64)
    assert c.duration_s == pytest.approx(1.5)
    assert c.caption == "[trigger] a red square moving right"
    long = names["long_000.mp4"]
    assert (long.frames, long.fps, long.width, long.height, long.caption) == (48, 24.0, 96, 64, None)
    still = names["clip_still_000.png"]
    assert (still.kind, still.frames, still.width) == ("image", 1, 64)
    assert {c.path.name for c in r.unreadable} == {"empty.mp4", "truncated.mp4"}
    assert all(c.error for c in r.unreadable)
    assert len(r.usable) == 7
    assert [c.path.name for c in r.missing_captions] == ["long_000.mp4"]
    assert r.total_duration_s == pytest.approx(4 * 1.5 + 2.0)
    assert [p.name for p in r.ignored] == ["notes.md"]


def test_scan_empty_caption_file_counts_as_present(tmp_path: Path) -> None:
    (p,) = write_clips(tmp_path, n=1)
    p.with_suffix(".txt").write_text("  \n")
    assert scan_file(p).caption == ""
    (q,) = write_clips(tmp_path, n=1, prefix="other", captions=False)
    q.with_suffix(".caption").write_text("hello")
    assert scan_folder(tmp_path, caption_ext="caption").items[1].caption == "hello"


def test_scan_upper_case_extension_and_hidden_files(tmp_path: Path) -> None:
    (p,) = write_clips(tmp_path, n=1)
    p.rename(tmp_path / "UP.MP4")
    (tmp_path / ".hidden.mp4").write_bytes(b"")
    r = scan_folder(tmp_path)
    assert [c.path.name for c in r.usable] == ["UP.MP4"] and not r.unreadable


def test_scan_folder_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match=str(tmp_path / "nope") + " does not exist"):
        scan_folder(tmp_path / "nope")
    f = tmp_path / "file.mp4"
    f.write_bytes(b"x")
    with pytest.raises(ScanError, match="is a file, not a folder"):
        scan_folder(f)


def test_scan_unreadable_folder(tmp_path: Path) -> None:
    """Run in a child without root's override capabilities, so the mode bites under CI's root too."""
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0)
    try:
        out = run_owner_only(
            "from wanlora.engine.data.scan import ScanError, scan_folder\n"
            f"try:\n    scan_folder({str(d)!r})\nexcept ScanError as e:\n    print('ScanError:', e)\n")
    finally:
        d.chmod(0o755)
    assert out.startswith("ScanError:") and "permission denied" in out and str(d) in out


def test_scan_is_torch_free(clip_folder: Path) -> None:
    code = (
        "import sys; from wanlora.engine.data.scan import scan_folder; "
        f"r = scan_folder({str(clip_folder)!r}); assert len(r.usable) == 7; "
        "assert 'torch' not in sys.modules, 'scan imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


@pytest.mark.parametrize("ext", [".mov", ".mkv", ".avi", ".webm"])
def test_every_supported_container_scans_and_decodes(tmp_path: Path, ext: str) -> None:
    (p,) = write_clips(tmp_path, n=1, num_frames=24, fps=24.0, ext=ext)
    (c,) = scan_folder(tmp_path).items
    assert (c.path, c.kind, c.frames, c.fps, c.width, c.height, c.error) == (p, "video", 24, 24.0, 64, 64, None)
    x0 = clip_params(0, (64, 64))["x0"]
    xs = [square_x(f) for f in read_video_frames(p, [0, 7, 23])]
    assert xs == [float((x0 + i * speed_px(64)) % 64) for i in (0, 7, 23)]
