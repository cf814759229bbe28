"""Expert-parallel on the CPU: 2 gloo processes, one per expert, through the daemon's launch line.

"The same run" means: the final LoRA pair equals the single-process alternating run's (same job file,
same seeds) up to float32 summation order, judged in gradient units (``assert_same_adam_weights``: a wrong
sample, draw, learning rate or step order differs by far more in most layers) — and each expert saw the same
timesteps in the same order (every step once).  ``switch_every = 2`` makes the expert-parallel states
mid-cycle ones (steps 0 and 2 done, 1 not yet), which one process must resume by going back to step 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from wanlora.engine.config import jobdir
from wanlora.engine.config.io import load_job
from wanlora.engine.config.launch import trainer_command
from wanlora.engine.model.lora_format import comfy_to_peft
from wanlora.engine.train import state as train_state
from wanlora.engine.train.demo import demo_job_dict, write_job_dir
from wanlora.engine.train.loop import run

from tests.engine.train.distributed.conftest import adam_rms, assert_same_adam_weights, finish, python, start

CPU = torch.device("cpu")
STEPS = 6
EXPERTS = ("high_noise", "low_noise")


def _job(clips: Path, model: Path) -> dict:
    return demo_job_dict(clips, model, steps=STEPS, multistage__switch_every=2, save__every=1000,
                         save__dtype="fp32", training__learning_rate=1e-2)


def _launch(job_dir: Path, procs: int, log: Path):
    env = {"WANLORA_CPU_PROCS": str(procs)}
    return start(trainer_command(load_job(job_dir / jobdir.JOB_TOML), job_dir, python(), env=env), log, **env)


def _pair(job_dir: Path) -> dict[str, torch.Tensor]:
    """The final LoRA files' weights, under their peft names."""
    out = {}
    for e in EXPERTS:
        weights, _ = comfy_to_peft(load_file(str(job_dir / "checkpoints" / f"wanlora_demo_{e}.safetensors")))
        out.update({f"{e}/{k}": v for k, v in weights.items()})
    return out


def _timesteps(job_dir: Path) -> dict[str, list[float]]:
    """Each expert's timesteps in the order its steps were logged; steps redone after a resume count once
    (a resume from step k drops what was logged after step k)."""
    steps: list[dict] = []
    for e in jobdir.read_events(job_dir):
        if e["type"] == "step":
            steps.append(e)
        elif e.get("state") == "resumed":
            steps = [s for s in steps if s["step"] <= e["step"]]
    out: dict[str, list[float]] = {e: [] for e in EXPERTS}
    for s in steps:
        out[s["expert"]].append(s["timestep"])
    return out


def _modes(job_dir: Path) -> list[str]:
    return [e["mode"] for e in jobdir.read_events(job_dir) if e.get("state") == "parallel"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, clips: Path, tiny_model: Path) -> Path:
    """One uninterrupted single-process run alternating the experts (the same job file)."""
    jd = write_job_dir(tmp_path_factory.mktemp("ref") / "job", _job(clips, tiny_model))
    assert run(jd, device=CPU) == jobdir.EXIT_OK
    return jd


def _same_pair(jd: Path, ref: Path, tiny_model: Path) -> None:
    got, want = _pair(jd), _pair(ref)
    assert got.keys() == want.keys() and len(want) > 0
    for e in EXPERTS:  # both experts trained: B moved off zero
        assert max(v.abs().max().item() for k, v in want.items() if k.startswith(e) and "lora_B" in k) > 1e-3
    # judged in gradient units: Adam turns rounding in a near-zero gradient into ~lr in its weight
    assert_same_adam_weights(got, want, adam_rms(train_state.latest_state(ref), tiny_model), lr=1e-2)
    assert _timesteps(jd) == _timesteps(ref)  # each expert: the same samples' draws, in order, once each


def test_two_processes_train_one_expert_each_and_equal_the_alternating_run(tmp_path: Path, clips: Path,
                                                                           tiny_model: Path, reference: Path) -> None:
    jd = write_job_dir(tmp_path / "job", _job(clips, tiny_model))
    log = tmp_path / "train.log"
    assert finish(_launch(jd, 2, log), log, timeout=240) == jobdir.EXIT_OK, log.read_text()[-3000:]
    assert _modes(jd) == ["expert"]  # auto picked expert-parallel: even count, both experts
    steps = [e for e in jobdir.read_events(jd) if e["type"] == "step"]
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    # both experts at once: each round logs one step of each (the alternating run logs 2 high, 2 low, ...)
    assert [s["expert"] for s in steps[:4]] == ["high_noise", "low_noise"] * 2
    _same_pair(jd, reference, tiny_model)
    meta = train_state.load_state(train_state.latest_state(jd))
    assert meta["meta"]["steps_done"] == {"high_noise": 4, "low_noise": 2} and meta["meta"]["multi_gpu"] == "expert"
    assert set(meta["adapters"]) == set(EXPERTS) and set(meta["optimizers"]) == set(EXPERTS)  # one state, both


def _copy_state_when_saved(job_dir: Path, step: int, to: Path, p, timeout: float = 180) -> None:
    """Copy the state of ``step`` as soon as it is complete (it is pruned two saves later)."""
    import shutil
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end and p.poll() is None:
        found = dict(train_state.list_states(job_dir)).get(step)
        if found is not None:
            shutil.copytree(found, to / found.name)
            return
        time.sleep(0.01)
    pytest.fail(f"no state for step {step} appeared")


@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)], ids=["expert-parallel-then-one", "one-then-expert-parallel"])
def test_stop_mid_way_and_resume_across_one_and_two_processes(tmp_path: Path, clips: Path, tiny_model: Path,
                                                              reference: Path, first: int, second: int) -> None:
    """Stopped (SIGTERM, the daemon's stop) after the state of step 2 was saved, resumed from that state.

    Expert-parallel's step-2 state has steps 0 (high) and 2 (low) done; one process's has 0 and 1 (both
    high).  Only that state is put back, so the resume always starts from step 2, as after a crash there;
    what the first run logged after step 2 does not count (see ``_timesteps``)."""
    import os
    import shutil
    import signal

    jd = write_job_dir(tmp_path / "job", {**_job(clips, tiny_model), "save": {"every": 2, "dtype": "fp32"}})
    log = tmp_path / "train.log"
    p = _launch(jd, first, log)
    keep = tmp_path / "kept"
    keep.mkdir()
    _copy_state_when_saved(jd, 2, keep, p)
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
    assert finish(p, log, timeout=240) in (143, jobdir.EXIT_OK), log.read_text()[-3000:]
    shutil.rmtree(train_state.state_root(jd))
    shutil.copytree(keep, train_state.state_root(jd))
    meta = train_state.load_state(dict(train_state.list_states(jd))[2])["meta"]
    assert meta["steps_done"] == ({"high_noise": 1, "low_noise": 1} if first == 2 else {"high_noise": 2, "low_noise": 0})
    p = _launch(jd, second, log)
    assert finish(p, log, timeout=240) == jobdir.EXIT_OK, log.read_text()[-3000:]
    assert [e["step"] for e in jobdir.read_events(jd) if e.get("state") == "resumed"] == [2]
    assert _modes(jd) == (["expert"] if first == 2 else []) + (["expert"] if second == 2 else [])
    _same_pair(jd, reference, tiny_model)


def test_four_processes_two_per_expert_equal_one_process_with_doubled_accumulation(tmp_path: Path, clips: Path,
                                                                                  tiny_model: Path) -> None:
    """k = 2 ranks per expert average their gradients inside the group: ≡ one process, accumulation 2."""
    steps = 4
    one = write_job_dir(tmp_path / "one", {**_job(clips, tiny_model), "training": {
        **_job(clips, tiny_model)["training"], "steps": steps, "gradient_accumulation": 2}})
    assert run(one, device=CPU) == jobdir.EXIT_OK
    jd = write_job_dir(tmp_path / "four", {**_job(clips, tiny_model), "training": {
        **_job(clips, tiny_model)["training"], "steps": steps}})
    log = tmp_path / "four.log"
    assert finish(_launch(jd, 4, log), log, timeout=300) == jobdir.EXIT_OK, log.read_text()[-3000:]
    assert [e["per_expert"] for e in jobdir.read_events(jd) if e.get("state") == "parallel"] == [2]
    _same_pair(jd, one, tiny_model)
