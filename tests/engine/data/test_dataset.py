"""build_dataset on real mp4s: pixels a user would see, captions, flips, resume, sharding, bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from wanlora.engine.config.schema import Job
from wanlora.engine.data.dataset import DataExhausted, build_dataset
from wanlora.engine.data.synthetic import clip_params, speed_px, square_x, write_bad_files, write_clips


def make_job(*datasets: dict, trigger: str = "sks", batch_size: int = 1, seed: int = 42) -> Job:
    base = {"resolutions": [64], "num_frames": 9, "caption_dropout": 0.0}
    return Job.model_validate({
        "job": {"trigger_word": trigger},
        "training": {"batch_size": batch_size, "seed": seed},
        "datasets": [{**base, **d} for d in datasets],
    })


def xs_of(pixels: torch.Tensor) -> list[float]:
    """Square position in each frame of a [3,F,H,W] sample."""
    frames = ((pixels.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).numpy()
    return [square_x(f) for f in frames]


@pytest.fixture(scope="module")
def folder_24fps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("f24")
    write_clips(d, n=3, num_frames=48, fps=24.0, caption="[trigger] a red square moving right", seed=1)
    return d


def test_sample_pixels_bucket_and_caption(folder_24fps: Path) -> None:
    data = build_dataset(make_job({"folder": str(folder_24fps), "frame_sampling": "even"}))
    b = data.next_batch()
    (s,) = b.samples
    assert b.pixels.shape == (1, 3, 9, 64, 64) and b.pixels.dtype == torch.float32
    assert s.pixels.shape == (3, 9, 64, 64) and s.bucket == (9, 64, 64)
    assert -1.0 <= s.pixels.min() and s.pixels.max() <= 1.0 and s.pixels.min() < -0.5  # real range used
    assert s.caption == "sks a red square moving right" and s.caption_raw.startswith("[trigger]")
    assert b.captions == [s.caption] and not s.dropped and not s.is_regularization
    # even sampling spreads 9 frames over all 48: first and last source frames are in
    assert s.frame_indices[0] == 0 and s.frame_indices[-1] == 47
    idx = int(s.path.stem.split("_")[1])
    x0 = clip_params(idx, (64, 64), seed=1)["x0"]
    assert xs_of(s.pixels) == [float((x0 + i * speed_px(64)) % 64) for i in s.frame_indices]


def test_fps_sampling_decodes_frames_1_5_apart(folder_24fps: Path) -> None:
    data = build_dataset(make_job({"folder": str(folder_24fps), "frame_sampling": "fps"}))
    starts = set()
    for _ in range(6):
        (s,) = data.next_batch().samples
        gaps = [b - a for a, b in zip(s.frame_indices, s.frame_indices[1:], strict=False)]
        assert sorted(set(gaps)) == [1, 2] and s.frame_indices[-1] - s.frame_indices[0] == 12
        # the pixels really are those frames: the square moves 2 px per source frame
        xs = xs_of(s.pixels)
        moved = [(b - a) % 64 for a, b in zip(xs, xs[1:], strict=False)]
        assert moved == [g * speed_px(64) for g in gaps]
        starts.add(s.frame_indices[0])
    assert len(starts) > 1  # random offsets cover different parts of the clip


def test_buckets_resize_and_crop_wide_clips(tmp_path: Path) -> None:
    write_clips(tmp_path, n=2, num_frames=12, size=(128, 64))
    data = build_dataset(make_job({"folder": str(tmp_path), "resolutions": [64, 96]}), batch_size=2)
    shapes = {tuple(data.next_batch().pixels.shape) for _ in range(4)}
    assert shapes == {(2, 3, 9, 48, 80), (2, 3, 9, 64, 144)}  # 2:1 clip → nearest-aspect bucket per resolution


def test_batches_group_by_bucket_with_mixed_sizes_and_images(tmp_path: Path) -> None:
    write_clips(tmp_path, n=3, num_frames=12, size=(64, 64), images=2)
    write_clips(tmp_path, n=3, num_frames=12, size=(128, 64), prefix="wide")
    data = build_dataset(make_job({"folder": str(tmp_path)}), batch_size=2)
    seen = set()
    for _ in range(8):
        b = data.next_batch()
        assert b.pixels.shape[0] == 2
        assert {s.bucket for s in b.samples} == {b.bucket}
        assert b.pixels.shape[2:] == b.bucket
        seen.add(b.bucket)
    assert (1, 64, 64) in seen  # images are one-frame samples
    assert {(9, 64, 64), (9, 48, 80)} <= seen


def test_flip_x_mirrors_motion(folder_24fps: Path) -> None:
    data = build_dataset(make_job({"folder": str(folder_24fps), "flip_x": True, "frame_sampling": "even"}))
    flipped = 0
    for _ in range(12):
        (s,) = data.next_batch().samples
        xs = xs_of(s.pixels)
        step = (xs[1] - xs[0]) % 64
        if s.flipped_x:
            flipped += 1
            assert step == (-6 * speed_px(64)) % 64  # moves left by 6 frames' worth
        else:
            assert step == 6 * speed_px(64)
        assert not s.flipped_y
    assert 2 <= flipped <= 10


def test_caption_dropout_and_default_caption(tmp_path: Path) -> None:
    write_clips(tmp_path, n=2, num_frames=12, captions=False)
    data = build_dataset(make_job({"folder": str(tmp_path), "default_caption": "[trigger] default", "caption_dropout": 1.0}))
    (s,) = data.next_batch().samples
    assert s.dropped and s.caption == "" and s.caption_raw == "[trigger] default"
    data = build_dataset(make_job({"folder": str(tmp_path), "default_caption": "[trigger] default"}, trigger=""))
    assert data.next_batch().captions == ["default"]


def test_weights_and_regularization_flags(tmp_path: Path) -> None:
    write_clips(tmp_path / "main", n=4, num_frames=12)
    write_clips(tmp_path / "reg", n=4, num_frames=12, prefix="reg", caption="a square")
    job = make_job({"folder": str(tmp_path / "main")},
                   {"folder": str(tmp_path / "reg"), "weight": 0.5, "is_regularization": True})
    data = build_dataset(job)
    samples = [data.next_batch().samples[0] for _ in range(24)]  # 4 epochs of 4 + 2
    reg = [s for s in samples if s.is_regularization]
    assert len(reg) == 8 and all(s.dataset_index == 1 and s.path.name.startswith("reg") for s in reg)
    assert all(not s.path.name.startswith("reg") for s in samples if not s.is_regularization)


def _run(data, n: int) -> list[tuple]:
    out = []
    for _ in range(n):
        b = data.next_batch()
        out.append((b.index, [s.path.name for s in b.samples], b.captions, b.pixels.clone()))
    return out


def _same(a: list[tuple], b: list[tuple]) -> None:
    assert [x[:3] for x in a] == [x[:3] for x in b]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x[3], y[3])  # bit for bit


def test_resume_is_bit_for_bit(folder_24fps: Path) -> None:
    job = make_job({"folder": str(folder_24fps), "frame_sampling": "fps", "flip_x": True, "caption_dropout": 0.3,
                    "resolutions": [64, 96]})
    whole = _run(build_dataset(job), 10)
    first = build_dataset(job)
    _same(_run(first, 4), whole[:4])
    state = first.state_dict()
    assert state["next_batch"] == 4 and state["seed"] == 42
    resumed = build_dataset(job)
    resumed.load_state_dict(state)
    _same(_run(resumed, 6), whole[4:])


def test_shards_cover_the_global_order_and_resume_across_world_sizes(folder_24fps: Path) -> None:
    job = make_job({"folder": str(folder_24fps), "frame_sampling": "fps"})
    glob = [x[0:2] for x in _run(build_dataset(job), 12)]
    r0, r1 = build_dataset(job, rank=0, world_size=2), build_dataset(job, rank=1, world_size=2)
    got = []
    for _ in range(3):  # three synchronous steps on two GPUs = global batches 0..5
        got += [x[0:2] for x in _run(r0, 1) + _run(r1, 1)]
    assert got == glob[:6]
    assert r0.state_dict() == r1.state_dict() and r0.state_dict()["next_batch"] == 6
    # resume on three GPUs: global batches 6..11 continue the same order
    ranks = [build_dataset(job, rank=r, world_size=3) for r in range(3)]
    for r in ranks:
        r.load_state_dict(r0.state_dict())
    got = []
    for _ in range(2):
        for r in ranks:
            got += [x[0:2] for x in _run(r, 1)]
    assert got == glob[6:12]


def test_prefetch_threads_give_identical_batches(folder_24fps: Path) -> None:
    job = make_job({"folder": str(folder_24fps), "frame_sampling": "fps", "flip_x": True})
    threaded = build_dataset(job, num_workers=2)
    try:
        _same(_run(threaded, 6), _run(build_dataset(job), 6))
        assert threaded.state_dict()["next_batch"] == 6
    finally:
        threaded.close()


def test_unreadable_files_warned_by_name_and_skipped(tmp_path: Path) -> None:
    write_clips(tmp_path, n=3, num_frames=12)
    write_bad_files(tmp_path)
    warnings: list[tuple[str, str | None]] = []
    data = build_dataset(make_job({"folder": str(tmp_path)}), warn=lambda m, p=None: warnings.append((m, p)))
    assert len(data) == 3
    assert {Path(p).name for _, p in warnings} == {"empty.mp4", "truncated.mp4"}
    assert any("empty.mp4: empty file" in m for m, _ in warnings)
    names = {data.next_batch().samples[0].path.name for _ in range(6)}
    assert names == {"clip_000.mp4", "clip_001.mp4", "clip_002.mp4"}


def test_clip_breaking_mid_run_is_reported_once_and_replaced(tmp_path: Path) -> None:
    write_clips(tmp_path, n=3, num_frames=12)
    warnings: list[tuple[str, str | None]] = []
    data = build_dataset(make_job({"folder": str(tmp_path)}), batch_size=3,
                         warn=lambda m, p=None: warnings.append((m, p)))
    victim = tmp_path / "clip_001.mp4"
    victim.write_bytes(victim.read_bytes()[:200])  # the copy got cut short after the scan
    for _ in range(3):
        b = data.next_batch()
        assert b.pixels.shape == (3, 3, 9, 64, 64)
        assert "clip_001.mp4" not in {s.path.name for s in b.samples}
    assert [Path(p).name for _, p in warnings] == ["clip_001.mp4"]


def test_every_clip_breaking_raises_data_exhausted(tmp_path: Path) -> None:
    write_clips(tmp_path, n=2, num_frames=12)
    data = build_dataset(make_job({"folder": str(tmp_path)}), warn=lambda m, p=None: None)
    for p in tmp_path.glob("*.mp4"):
        p.write_bytes(b"")
    with pytest.raises(DataExhausted, match="unreadable"):
        for _ in range(10):
            data.next_batch()


def test_missing_or_empty_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataExhausted, match=str(tmp_path / "nope")):
        build_dataset(make_job({"folder": str(tmp_path / "nope")}))
    write_bad_files(tmp_path / "bad")
    with pytest.raises(DataExhausted, match="no usable clip"):
        build_dataset(make_job({"folder": str(tmp_path / "bad")}), warn=lambda m, p=None: None)
    with pytest.raises(DataExhausted, match="no \\[\\[datasets\\]\\]"):
        build_dataset(Job())


def test_changed_dataset_warns_on_resume(tmp_path: Path) -> None:
    write_clips(tmp_path, n=3, num_frames=12)
    job = make_job({"folder": str(tmp_path)})
    state = build_dataset(job).state_dict()
    shutil.copy(tmp_path / "clip_000.mp4", tmp_path / "clip_new.mp4")
    warnings: list[str] = []
    data = build_dataset(job, warn=lambda m, p=None: warnings.append(m))
    data.load_state_dict(state)
    assert any("changed since this state was saved" in w for w in warnings)
    data.next_batch()
    data.load_state_dict({"kind": "provisional", "epoch": 3, "pos": 1})  # another format: restart, say so
    assert "starts again from the beginning" in warnings[-1]
    assert data.next_batch().index == 0
