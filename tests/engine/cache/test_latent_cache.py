"""Latent cache on real clips and the tiny model's real VAE: reuse across jobs, exact invalidation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from wanlora.engine.cache.keys import CACHE_DIRNAME, HashIndex, cache_dir_for, model_identity
from wanlora.engine.cache.latents import BatchLatents, LatentCache, encode_sample, fill
from wanlora.engine.config.schema import Job
from wanlora.engine.data.dataset import build_dataset
from wanlora.engine.data.frames import fps_windows
from wanlora.engine.data.synthetic import write_clips

from tests.engine.cache.conftest import VaeCounter

pytestmark = pytest.mark.usefixtures("_home")  # a private WANLORA_HOME, offline (tests/engine/conftest.py)


@pytest.fixture(scope="module")
def vae(tiny_model: Path):
    from wanlora.engine.model.folder import load_vae

    return load_vae(tiny_model, torch.float32, "cpu")


def job_for(folder: Path, **ds) -> Job:
    base = {"folder": str(folder), "resolutions": [64], "num_frames": 9, "caption_dropout": 0.0,
            "cache_latents": True}
    return Job.model_validate({"datasets": [{**base, **ds}]})


def run_fill(folder: Path, vae, tiny_model: Path, **ds):
    """What a new job does: scan, open the cache from disk, encode what is missing."""
    data = build_dataset(job_for(folder, **ds))
    d = cache_dir_for(folder)
    cache = LatentCache(d, model_identity(tiny_model, ["vae"], dtype="float32"), "float32", HashIndex(d))
    counter = VaeCounter(vae)
    try:
        stats = fill(data, {0: cache}, vae)
    finally:
        vae.encode = counter._orig
    return stats, counter.calls, cache, data


def test_second_job_does_no_vae_work_and_changes_recompute_exactly_what_they_affect(
        tmp_path: Path, vae, tiny_model: Path) -> None:
    folder = tmp_path / "clips"
    write_clips(folder, n=3, num_frames=24, size=(64, 64))
    stats, calls, _c, _d = run_fill(folder, vae, tiny_model)
    assert (stats.total, stats.computed, calls) == (3, 3, 6)  # per clip: target latents + condition latents
    assert (folder / CACHE_DIRNAME / "latents").is_dir()

    stats, calls, cache, _d = run_fill(folder, vae, tiny_model)  # a second job, same clips and settings
    assert (stats.computed, stats.reused, calls) == (0, 3, 0)
    assert cache.hashes.hashed == 0  # unchanged files are not even re-read

    stats, calls, _c, _d = run_fill(folder, vae, tiny_model, resolutions=[64, 80])  # one new resolution
    assert (stats.total, stats.computed, stats.reused, calls) == (6, 3, 3, 6)

    stats, _calls, _c, _d = run_fill(folder, vae, tiny_model, num_frames=13)  # every entry has other frames
    assert (stats.computed, stats.reused) == (3, 0)

    stats, _calls, _c, _d = run_fill(folder, vae, tiny_model, flip_x=True)  # flipped variants are new entries
    assert (stats.total, stats.computed, stats.reused) == (6, 3, 3)

    write_clips(folder, n=1, num_frames=24, size=(64, 64), seed=7)  # clip_000.mp4 gets other bytes
    stats, calls, cache, _d = run_fill(folder, vae, tiny_model)
    assert (stats.computed, stats.reused, calls) == (1, 2, 2)
    assert cache.hashes.hashed == 1


def test_cached_latents_are_the_live_encoding_and_flips_are_encoded_not_mirrored(
        tmp_path: Path, vae, tiny_model: Path) -> None:
    folder = tmp_path / "clips"
    write_clips(folder, n=2, num_frames=24, size=(64, 64))
    _s, _n, cache, data = run_fill(folder, vae, tiny_model, flip_x=True)
    latents = BatchLatents({0: cache}, {0: "even"})
    seen_flip = False
    for _ in range(6):
        b = data.next_batch()
        x0, cond = latents(b, None, torch.device("cpu"))  # no VAE at all: everything comes from disk
        live_x0, live_cond = encode_sample(vae, b.samples[0].pixels)
        torch.testing.assert_close(x0[0], live_x0, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cond[0], live_cond, rtol=1e-5, atol=1e-6)
        assert cond.shape[1] == 20 and bool((cond[0, :4, 0] == 1).all()) and bool((cond[0, :4, 1:] == 0).all())
        if b.samples[0].flipped_x:
            seen_flip = True
            unflipped = encode_sample(vae, b.samples[0].pixels.flip(-1))[0]
            assert not torch.allclose(x0[0], unflipped.flip(-1), atol=1e-3)  # mirroring latents is not the same
    assert seen_flip and latents.misses == 0


def test_fps_sampling_with_cache_draws_fixed_windows_that_are_all_precomputed(
        tmp_path: Path, vae, tiny_model: Path) -> None:
    folder = tmp_path / "f24"
    write_clips(folder, n=2, num_frames=48, size=(64, 64), fps=24.0)
    stats, _n, cache, data = run_fill(folder, vae, tiny_model, frame_sampling="fps")
    starts = {w.indices[0] for w in fps_windows(48, 24.0, 9)}
    assert stats.total == 2 * len(starts) and len(starts) == 3
    latents = BatchLatents({0: cache}, {0: "fps"})
    used = set()
    for _ in range(16):
        b = data.next_batch()
        s = b.samples[0]
        assert s.frame_indices[0] in starts and s.frame_indices[-1] - s.frame_indices[0] == 12  # 1.5 apart
        latents(b, None, torch.device("cpu"))
        used.add(s.frame_indices[0])
    assert latents.misses == 0 and len(used) > 1


def test_fps_windows_tile_the_clip_without_overlap() -> None:
    wins = fps_windows(240, 24.0, 41)  # 10 s at 24 fps, 41 frames at 16 fps span 60 source frames
    assert wins[0].indices[0] == 0 and wins[-1].indices[-1] == 239
    for w in wins:
        assert w.indices[-1] - w.indices[0] == 60 and len(w.indices) == 41
    for a, b in zip(wins, wins[1:], strict=False):
        assert b.indices[0] > a.indices[-1]
    assert len(fps_windows(30, 24.0, 41)) == 1  # too short: one (even) selection


def test_unwritable_dataset_folder_caches_under_the_home(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / CACHE_DIRNAME).write_text("")  # the cache folder cannot be created here
    d = cache_dir_for(folder)
    assert d.is_dir() and str(d).startswith(str(tmp_path / "home" / "cache"))
    assert cache_dir_for(folder) == d  # stable: every job finds the same entries


def test_every_setting_is_part_of_the_key(tmp_path: Path) -> None:
    from wanlora.engine.cache.latents import LatentSpec

    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x" * 100)
    c = LatentCache(tmp_path, "vae1", "float32")
    base = LatentSpec(clip, "video", (9, 64, 64), tuple(range(9)), "even")
    variants = [
        LatentSpec(clip, "video", (9, 48, 80), tuple(range(9)), "even"),
        LatentSpec(clip, "video", (9, 64, 64), tuple(range(1, 10)), "even"),
        LatentSpec(clip, "video", (9, 64, 64), tuple(range(9)), "fps"),
        LatentSpec(clip, "video", (9, 64, 64), tuple(range(9)), "even", flip_x=True),
        LatentSpec(clip, "video", (9, 64, 64), tuple(range(9)), "even", flip_y=True),
    ]
    keys = {c.key(base)} | {c.key(v) for v in variants}
    keys |= {LatentCache(tmp_path, "vae2", "float32").key(base), LatentCache(tmp_path, "vae1", "bfloat16").key(base)}
    assert len(keys) == 1 + len(variants) + 2
    assert c.key(base) == LatentCache(tmp_path, "vae1", "float32").key(base)  # and nothing else is
