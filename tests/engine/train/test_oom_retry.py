"""A CUDA OOM under the speed plan costs speed, not the run: the step is retried with every block checkpointed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from wanlora.engine.config import jobdir

from tests.engine.conftest import make_job_dir


def _trainer(tmp: Path, clips: Path, tiny_model: Path, name: str):
    from wanlora.engine.config.io import load_job
    from wanlora.engine.train.events import EventLog, Status
    from wanlora.engine.train.loop import Trainer

    jd = make_job_dir(tmp / name, clips, tiny_model, steps=3, multistage__low_noise=False)
    tr = Trainer(load_job(jd / "job.toml"), jd, EventLog(jd), Status(jd), device=torch.device("cpu"))
    tr.setup()
    return tr, jd


def test_oom_falls_back_to_full_checkpointing_and_repeats_the_same_step(tmp_path, clips, tiny_model, monkeypatch):
    ref, _ = _trainer(tmp_path, clips, tiny_model, "ref")
    ref_losses = [ref.train_step().loss for _ in range(2)]
    ref.data.close()

    tr, jd = _trainer(tmp_path, clips, tiny_model, "oom")
    real = type(tr).forward_loss
    calls = {"n": 0}

    def flaky(self, ex, batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, ex, batch)

    monkeypatch.setattr(type(tr), "forward_loss", flaky)
    losses = [tr.train_step().loss for _ in range(2)]
    tr.data.close()
    assert losses == pytest.approx(ref_losses, rel=1e-6)  # the retried step trained on the same data and noise
    ex = tr.experts["high_noise"]
    plans = tr.checkpointing.get(ex.name)  # only the bucket that ran out falls back
    assert plans.fallen_back == {plans.bucket_in_force}
    warnings = [e for e in jobdir.read_events(jd) if e["type"] == "warning" and "out of memory" in e["message"]]
    assert len(warnings) == 1
    retries = [e for e in jobdir.read_events(jd) if e["type"] == "state" and e["state"] == "retrying"]
    assert [e["expert"] for e in retries] == ["high_noise"]  # logged once, after the failed step was released

    # a second OOM under the frugal plan is a real OOM: it propagates (the run exits with the guide's ladder)
    monkeypatch.setattr(type(tr), "forward_loss", lambda self, ex, b: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))
    with pytest.raises(torch.OutOfMemoryError):
        tr.train_step()


def test_the_failed_steps_memory_is_free_before_the_retry(tmp_path, clips, tiny_model, monkeypatch):
    """What the step that ran out held (its activations) is released before the step runs again, even where
    its frames sit in a reference cycle with the error, as torch's compiled/checkpointed frames do."""
    import weakref

    tr, _ = _trainer(tmp_path, clips, tiny_model, "cycle")
    real = type(tr).forward_loss
    held: list[weakref.ref] = []
    alive_at_retry: list[bool] = []

    def flaky(self, ex, batch):
        if not held:
            activations = torch.empty(1 << 20)  # what the failed forward had built
            held.append(weakref.ref(activations))
            dop_term = torch.empty(1 << 20)  # a DOP term the trainer keeps, with the failed step's graph
            held.append(weakref.ref(dop_term))
            self.last_dop = dop_term
            del dop_term
            err = torch.OutOfMemoryError("CUDA out of memory (simulated)")  # frame -> err -> traceback -> frame
            raise err
        alive_at_retry.append(any(h() is not None for h in held))
        return real(self, ex, batch)

    monkeypatch.setattr(type(tr), "forward_loss", flaky)
    tr.train_step()
    tr.data.close()
    assert alive_at_retry == [False], "the retry started with the failed step's tensors still allocated"
