"""A SIGTERM that lands while the ranks agree on control flags still stops the run at the next boundary.

The trainer used to assign the agreed stop back to ``StopSignal.requested``; a signal handled during that
all-reduce was overwritten with the value read before it, the run went on, and torchrun killed the ranks
30 s later without a state (test_sigterm_to_the_group_saves_once_and_exits_143 failed under load)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from wanlora.engine.train import distributed

from tests.engine.conftest import make_job_dir


def test_a_signal_during_the_agreement_is_not_lost(tmp_path: Path, clips: Path, tiny_model: Path, monkeypatch) -> None:
    from wanlora.engine.config.io import load_job
    from wanlora.engine.train.events import EventLog, Status
    from wanlora.engine.train.loop import StopRun, Trainer

    jd = make_job_dir(tmp_path / "job", clips, tiny_model, steps=3, multistage__low_noise=False)
    tr = Trainer(load_job(jd / "job.toml"), jd, EventLog(jd), Status(jd), device=torch.device("cpu"))
    tr.setup()
    real = distributed.agree_on_control

    def signal_lands_during_the_all_reduce(ctx, flags, stop):  # noqa: ANN001, ANN202
        agreed = real(ctx, flags, stop)  # the group answered from what this rank read before...
        tr.stop._handle(signal.SIGTERM, None)  # ...and then the handler ran
        return agreed

    monkeypatch.setattr(distributed, "agree_on_control", signal_lands_during_the_all_reduce)
    tr._handle_flags()  # this boundary: the group agreed on "no stop"
    monkeypatch.setattr(distributed, "agree_on_control", real)
    assert tr.stop.requested == "SIGTERM"
    with pytest.raises(StopRun) as stopped:  # the next boundary acts on it
        tr._handle_flags()
    assert stopped.value.code == 143
    tr.data.close()
