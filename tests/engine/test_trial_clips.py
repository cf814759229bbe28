"""``wanlora trial --clips N``: a big dataset's trial caches and trains on its first N clips only, leaves the
dataset folder alone, and projects the caching time to every clip."""

from __future__ import annotations

import os
from pathlib import Path

from wanlora.engine.config.schema import Job
from wanlora.engine.trial import project, trial_job


def _folder(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"clip_{i:02d}.mp4").write_bytes(b"not decoded here %d" % i)
        (root / f"clip_{i:02d}.txt").write_text(f"caption {i}\n")
    (root / "notes.md").write_text("the user's own file\n")
    return root


def _job(*folders: Path) -> Job:
    return Job.model_validate({"datasets": [{"folder": str(f), "resolutions": [64], "num_frames": 9} for f in folders]})


def test_first_n_clips_of_each_dataset_with_their_captions(tmp_path: Path) -> None:
    big, small = _folder(tmp_path / "big", 7), _folder(tmp_path / "small", 2)
    before = sorted(os.listdir(big))
    tjob, notes, sampled = trial_job(_job(big, small), tmp_path / "trial", tiny_model=None, clips=3)

    assert sampled == (5, 9)  # 3 of 7 + 2 of 2
    assert any("--clips 3" in n and "5 of the job's 9 clips" in n for n in notes), notes
    sub = Path(tjob.datasets[0].folder)
    assert sub != big and sub.is_relative_to(tmp_path / "trial")
    assert sorted(p.name for p in sub.glob("*.mp4")) == ["clip_00.mp4", "clip_01.mp4", "clip_02.mp4"]
    assert (sub / "clip_01.txt").read_text() == "caption 1\n"  # the caption travels with its clip
    assert (sub / "clip_02.mp4").resolve() == (big / "clip_02.mp4").resolve()  # a link, not a copy
    assert Path(tjob.datasets[1].folder) == small  # at most N clips: the dataset as it is
    assert sorted(os.listdir(big)) == before  # nothing written beside the user's clips


def test_without_clips_the_datasets_are_untouched(tmp_path: Path) -> None:
    big = _folder(tmp_path / "big", 4)
    tjob, notes, sampled = trial_job(_job(big), tmp_path / "trial", tiny_model=None)
    assert sampled is None and Path(tjob.datasets[0].folder) == big and notes == []


def _report(**caching: float) -> dict:
    expert = {"warmup_s": [5.0, 2.0], "s_per_step": 2.0}
    return {
        "buckets": [{"bucket": "41x512x512", "s_per_step": 2.0, "switch_s": 0.0,
                     "experts": {"high_noise": expert, "low_noise": expert}}],
        "caching": {"latents_s": 120.0, "text_s": 6.0, **caching},
        "checkpoint_s": 0.0, "state_s": 0.0, "load_s": 0.0,
    }


def test_projection_scales_caching_by_the_clips_left_out() -> None:
    job = Job.model_validate({"training": {"steps": 100}, "save": {"every": 1000}})
    shares = {(41, 512, 512): 1.0}
    full = project(job, _report(), shares)
    sampled = project(job, _report(clips_used=4, clips_in_job=20), shares)
    assert abs(full["caching_h"] - 126.0 / 3600) < 1e-3
    assert abs(sampled["caching_h"] - (120.0 * 20 / 4 + 6.0) / 3600) < 1e-3  # text is per prompt, not per clip
    assert abs((sampled["total_h"] - full["total_h"]) - 480.0 / 3600) < 0.011
