"""Data parallel on the CPU through real torchrun + gloo processes on the tiny model.

Equivalences checked (timesteps and noise are keyed per sample, so they must hold to float tolerance):
- 2 ranks × batch 1 ≡ 1 process × batch 2 (all clips share one bucket, so global batch g of size 2 is
  samples 2g, 2g+1 — exactly what ranks 0 and 1 get at step g);
- 2 ranks × batch 1 ≡ 1 process × batch 1 with gradient accumulation 2 — used to pause on one world size
  and resume on the other while the reference stays one uninterrupted run.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from wanlora.engine.config import jobdir
from wanlora.engine.config.io import job_from_dict, load_job, save_job
from wanlora.engine.config.launch import trainer_command
from wanlora.engine.model.lora import lora_state_dict
from wanlora.engine.train import state as train_state
from wanlora.engine.train.demo import demo_job_dict, write_job_dir
from wanlora.engine.train.events import EventLog, Status
from wanlora.engine.train.loop import Trainer, run

from tests.engine.train.distributed.conftest import (
    ROOT,
    adam_rms,
    assert_same_adam_weights,
    finish,
    python,
    start,
    wait_for_step,
)

CPU = torch.device("cpu")
STEPS = 10


def _job(clips: Path, model: Path, steps: int, **kw: object) -> dict:
    return demo_job_dict(clips, model, steps=steps, multistage__low_noise=False, save__every=1000,
                         training__learning_rate=1e-2, **kw)


def _steps(job_dir: Path) -> list[dict]:
    return [e for e in jobdir.read_events(job_dir) if e["type"] == "step"]


def _launch(job_dir: Path, procs: int, log: Path, **env: str):
    """The daemon's launch line for this job, with ``procs`` CPU processes (WANLORA_CPU_PROCS)."""
    env = {"WANLORA_CPU_PROCS": str(procs), **env}
    cmd = trainer_command(load_job(job_dir / jobdir.JOB_TOML), job_dir, python(), env=env)
    assert ("wanlora.engine.train.torchrun" in cmd) == (procs > 1 or "--nnodes" in cmd)
    return start(cmd, log, **env)


def _set_accumulation(job_dir: Path, accum: int) -> None:
    d = load_job(job_dir / jobdir.JOB_TOML).model_dump()
    d["training"]["gradient_accumulation"] = accum
    save_job(job_from_dict(d), job_dir / jobdir.JOB_TOML)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, clips: Path, tiny_model: Path) -> list[dict]:
    """One uninterrupted single-process run: batch 1 × accumulation 2 (the global batch of 2 ranks)."""
    jd = write_job_dir(tmp_path_factory.mktemp("ref") / "job",
                       _job(clips, tiny_model, STEPS, training__gradient_accumulation=2))
    assert run(jd, device=CPU) == jobdir.EXIT_OK
    return _steps(jd)


def _same_run(got: list[dict], ref: list[dict]) -> None:
    assert [s["step"] for s in got] == [s["step"] for s in ref]  # every step once, none twice
    assert [s["timestep"] for s in got] == [s["timestep"] for s in ref]  # the same samples, the same draws
    torch.testing.assert_close(torch.tensor([s["loss"] for s in got]), torch.tensor([s["loss"] for s in ref]),
                               rtol=1e-4, atol=1e-6)


def test_two_ranks_equal_one_process_with_the_doubled_batch(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    jd = write_job_dir(tmp_path / "two", _job(clips, tiny_model, 3))
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "two.log"
    p = start([python(), "-m", "wanlora.engine.train.torchrun", "--standalone", "--nproc-per-node", "2",
               str(ROOT / "tests" / "engine" / "train" / "distributed" / "worker.py"), str(jd), str(out)], log)
    assert finish(p, log) == 0, log.read_text()[-3000:]
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)  # replicas stay identical

    one = write_job_dir(tmp_path / "one", _job(clips, tiny_model, 3, training__batch_size=2))
    tr = Trainer(load_job(one / jobdir.JOB_TOML), one, EventLog(one), Status(one), device=CPU)
    tr.setup()
    tr.train()
    ref = {f"high_noise/{k}": v for k, v in lora_state_dict(tr.experts["high_noise"].model).items()}
    tr.data.close()
    assert ref.keys() == r0.keys()
    assert max(v.abs().max().item() for k, v in ref.items() if "lora_B" in k) > 1e-3  # B moved off zero
    # batch 2 in one process vs two batch-1 gradients all-reduced: the same sums in another order, judged in
    # gradient units (Adam turns rounding in a near-zero gradient into ~lr in its weight)
    assert_same_adam_weights(r0, ref, adam_rms(train_state.latest_state(one), tiny_model), lr=1e-2)
    _same_run(_steps(jd), _steps(one))


@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)], ids=["pause-on-2-resume-on-1", "pause-on-1-resume-on-2"])
def test_pause_and_resume_on_another_number_of_processes(tmp_path: Path, clips: Path, tiny_model: Path,
                                                         reference: list[dict], first: int, second: int) -> None:
    jd = write_job_dir(tmp_path / "job", _job(clips, tiny_model, STEPS,
                                              training__gradient_accumulation=2 // first))
    log = tmp_path / "train.log"
    p = _launch(jd, first, log)
    wait_for_step(jd, 1, p)
    jobdir.request_flag(jd, jobdir.FLAG_PAUSE)
    assert finish(p, log) == jobdir.EXIT_PAUSED, log.read_text()[-3000:]  # the group's code, not torchrun's 1
    k = _steps(jd)[-1]["step"]
    assert 1 <= k < STEPS
    meta = train_state.load_state(train_state.latest_state(jd))["meta"]
    assert meta["step"] == k and meta["data"]["next_batch"] == 2 * k  # 2 global batches per step

    _set_accumulation(jd, 2 // second)
    p = _launch(jd, second, log)
    assert finish(p, log) == jobdir.EXIT_OK, log.read_text()[-3000:]
    _same_run(_steps(jd), reference)
    resumed = [e for e in jobdir.read_events(jd) if e.get("state") == "resumed"]
    assert [e["step"] for e in resumed] == [k]
    meta = train_state.load_state(train_state.latest_state(jd))["meta"]
    assert meta["step"] == STEPS and meta["data"]["next_batch"] == 2 * STEPS
    assert not (jd / jobdir.CONTROL_DIR / jobdir.FLAG_PAUSE).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_machine(tmp_path: Path, clips: Path, tiny_model: Path, reference: list[dict]) -> None:
    """torchrun --nnodes 2 with a c10d rendezvous on 127.0.0.1: two launchers of one process each."""
    jd = write_job_dir(tmp_path / "job", _job(clips, tiny_model, 4, job__nodes=2))
    env = {"WANLORA_RDZV_ENDPOINT": f"127.0.0.1:{_free_port()}", "WANLORA_RDZV_ID": "nodes-test"}
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    procs = [_launch(jd, 1, log, **env) for log in logs]
    codes = [finish(p, log) for p, log in zip(procs, logs, strict=True)]
    assert codes == [0, 0], "\n".join(log.read_text()[-2000:] for log in logs)
    _same_run(_steps(jd), reference[:4])  # one writer: each step logged once
    assert (jd / "checkpoints" / "wanlora_demo_high_noise.safetensors").is_file()


def test_fsdp_sharded_base_trains_the_same(tmp_path: Path, clips: Path, tiny_model: Path, reference: list[dict]) -> None:
    """advanced.fsdp on 2 gloo ranks: the frozen Linears are sharded, the run is unchanged."""
    jd = write_job_dir(tmp_path / "job", _job(clips, tiny_model, 3, advanced__fsdp=True))
    log = tmp_path / "train.log"
    assert finish(_launch(jd, 2, log), log) == jobdir.EXIT_OK, log.read_text()[-3000:]
    sharded = [e for e in jobdir.read_events(jd) if e.get("state") == "sharded"]
    assert sharded and sharded[0]["linears"] > 0 and sharded[0]["world_size"] == 2
    _same_run(_steps(jd), reference[:3])


def test_sigterm_to_the_group_saves_once_and_exits_143(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    """``kill -TERM -PGID`` (the daemon's cancel/stop) reaches each rank twice — directly and via torchrun —
    and must still be one graceful stop: a state at the step boundary, exit 143 from the whole group."""
    import os
    import signal

    jd = write_job_dir(tmp_path / "job", _job(clips, tiny_model, 500))
    log = tmp_path / "train.log"
    p = _launch(jd, 2, log)
    wait_for_step(jd, 1, p)
    os.killpg(p.pid, signal.SIGTERM)
    assert finish(p, log) == 143, log.read_text()[-3000:]
    last = _steps(jd)[-1]["step"]
    states = train_state.list_states(jd)
    assert states and states[-1][0] == last < 500, (states, last, log.read_text()[-3000:])
    assert jobdir.read_status(jd)["state"] == "stopped"
