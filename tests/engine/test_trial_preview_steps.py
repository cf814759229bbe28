"""``wanlora trial --preview-steps N``: the fit check renders the preview with N denoising steps (the memory of a
step does not depend on how many run), and the report scales the preview's time to the job's own steps, so the
projection still counts full previews (bench/tier_matrix.py's fit cells use it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.conftest import previewing_job


def test_preview_steps_run_fewer_steps_and_scale_the_time_to_the_job(tmp_path: Path, clips: Path,
                                                                      tiny_model: Path, monkeypatch) -> None:
    from wanlora.engine.train.loop import Trainer
    from wanlora.engine.trial import format_report, run_trial

    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    job = previewing_job(clips, tiny_model, tmp_path, preview_steps=6)

    seen: list[int] = []
    real = Trainer.sample_previews

    def counting(self, *a, **k):
        seen.append(self.job.sample.steps)
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "sample_previews", counting)
    r = run_trial(job, steps=1, device=torch.device("cpu"), preview_steps=2)
    assert seen == [2]  # the preview ran with 2 denoising steps, not the job's 6
    p = r["preview"]
    assert p["steps"] == 2 and p["job_steps"] == 6 and p["files"] == 1
    assert p["s"] == pytest.approx(p["measured_s"] * 6 / 2, abs=0.02)  # scaled to the job's 6 steps (rounding)
    # the projection counts the job's previews at the scaled time: 40 steps / every 20 = 2 previews, 1 prompt
    assert r["projection"]["previews_h"] == pytest.approx(2 * p["s"] / 3600, abs=2e-3)
    assert job.sample.steps == 6  # the user's job is not changed
    assert "(scaled to the job's 6 steps)" in format_report(r)
