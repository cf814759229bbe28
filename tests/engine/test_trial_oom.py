"""A bucket that runs out of memory even with every block checkpointed is a row of the trial's report, not the
end of the trial: the other buckets keep their figures, and the projection says the job cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from wanlora.engine.config.schema import Job

from tests.engine.conftest import previewing_job


def test_one_bucket_out_of_memory_keeps_the_others_and_refuses_a_projection(tmp_path: Path, clips: Path,
                                                                              tiny_model: Path, monkeypatch) -> None:
    from wanlora.engine.train.demo import demo_job_dict
    from wanlora.engine.train.loop import Trainer
    from wanlora.engine.trial import format_report, run_trial

    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    from wanlora.engine.data.synthetic import write_clips

    big = tmp_path / "big"
    write_clips(big, n=2, num_frames=24, size=(96, 96), fps=16.0, captions=True)
    d = demo_job_dict(clips, tiny_model, steps=40, multistage__low_noise=False)
    d["datasets"].append({**d["datasets"][0], "folder": str(big), "resolutions": [96]})
    job = Job.model_validate(d)

    real = Trainer.forward_loss
    tried: list[int] = []

    def big_bucket_never_fits(self, ex, batch):
        if batch.pixels.shape[-1] == 96:  # the 96² bucket: every attempt, the frugal retry too
            tried.append(64)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.21 GiB (simulated)")
        return real(self, ex, batch)

    monkeypatch.setattr(Trainer, "forward_loss", big_bucket_never_fits)
    r = run_trial(job, steps=1, device=torch.device("cpu"), preview=False)

    rows = {b["bucket"]: b for b in r["buckets"]}
    assert set(rows) == {"9x64x64", "9x96x96"}
    assert rows["9x64x64"]["s_per_step"] > 0  # measured although a later bucket failed
    assert rows["9x64x64"]["samples_per_s"] == pytest.approx(1 / rows["9x64x64"]["s_per_step"], rel=1e-3)  # batch 1
    assert "Tried to allocate 2.21 GiB" in rows["9x96x96"]["oom"] and "s_per_step" not in rows["9x96x96"]
    assert len(tried) == 2  # the speed plan, then every block checkpointed: only then is it a row
    assert r["projection"]["total_h"] is None and "9x96x96 ran out of memory" in r["projection"]["why"]
    assert r["plan"]["attention"] == "native"  # the kernel the speeds were measured with (SDPA on the CPU)
    text = format_report(r)
    assert "no projection: 9x96x96 ran out of memory" in text


def test_a_preview_out_of_memory_is_a_row_and_refuses_the_projection(tmp_path: Path, clips: Path,
                                                                     tiny_model: Path, monkeypatch) -> None:
    """The 24 GB character job trained, then its 768² preview ran out of memory (H100 under a 24 GiB cap,
    2026-12-07): the trial must keep the buckets' figures and say the job would fail at its first preview."""
    from wanlora.engine.train.loop import Trainer
    from wanlora.engine.trial import format_report, run_trial

    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    job = previewing_job(clips, tiny_model, tmp_path, preview_steps=2)

    def preview_never_fits(self, why="sample.every"):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 300.00 MiB (simulated)")

    monkeypatch.setattr(Trainer, "sample_previews", preview_never_fits)
    r = run_trial(job, steps=1, device=torch.device("cpu"))
    assert all("s_per_step" in b for b in r["buckets"])  # the training buckets keep their figures
    assert "300.00 MiB" in r["preview"]["oom"]
    assert r["projection"]["total_h"] is None and "preview ran out of memory" in r["projection"]["why"]
    assert "preview 64x64x5, 2 steps: out of memory" in format_report(r)
