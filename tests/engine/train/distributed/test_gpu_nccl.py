"""The data-parallel path on real GPUs over NCCL (run by the lead, ≥ 2 GPUs:
``pytest -m gpu tests/engine/train/distributed``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from wanlora.engine.config import jobdir
from wanlora.engine.config.io import load_job
from wanlora.engine.config.launch import child_env, trainer_command
from wanlora.engine.train.demo import demo_job_dict, write_job_dir

from tests.engine.train.distributed.conftest import finish, python, start

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                 reason="needs 2 CUDA GPUs")]


def _run(jd: Path, gpus: list[int], log: Path) -> int:
    cmd = trainer_command(load_job(jd / jobdir.JOB_TOML), jd, python(), gpus=gpus, env={})
    env = child_env({}, gpus=gpus)  # CUDA_VISIBLE_DEVICES + NVLink multicast off, as the daemon sets them
    return finish(start(cmd, log, **env), log, timeout=600)


def test_two_gpus_over_nccl_match_one_gpu_with_accumulation(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    kw = dict(steps=6, multistage__switch_every=3, save__every=3, training__learning_rate=1e-3)
    two = write_job_dir(tmp_path / "two", demo_job_dict(clips, tiny_model, job__gpus=[0, 1], **kw))
    one = write_job_dir(tmp_path / "one", demo_job_dict(clips, tiny_model, training__gradient_accumulation=2, **kw))
    assert _run(two, [0, 1], tmp_path / "two.log") == 0, (tmp_path / "two.log").read_text()[-3000:]
    assert _run(one, [0], tmp_path / "one.log") == 0, (tmp_path / "one.log").read_text()[-3000:]
    s2 = [e for e in jobdir.read_events(two) if e["type"] == "step"]
    s1 = [e for e in jobdir.read_events(one) if e["type"] == "step"]
    assert [s["timestep"] for s in s2] == [s["timestep"] for s in s1]  # same samples and draws
    torch.testing.assert_close(torch.tensor([s["loss"] for s in s2]), torch.tensor([s["loss"] for s in s1]),
                               rtol=3e-2, atol=1e-3)  # bf16 on GPU
    assert all(s["peak_vram_gb"] for s in s2)
    assert (two / "checkpoints" / "wanlora_demo_high_noise.safetensors").is_file()
