"""How a trainer's end becomes state + reason (the trainer's exit-code contract in engine.config.jobdir)."""

from __future__ import annotations

import signal

from wanlora.daemon.runner import MULTICAST_OFF, classify, trainer_command, trainer_env
from wanlora.engine.config import jobdir


def test_exit_codes_map_to_states_and_reasons() -> None:
    assert classify(jobdir.EXIT_OK, None).state == "completed"
    assert classify(jobdir.EXIT_PAUSED, {"step": 7}).state == "paused"
    oom = classify(jobdir.EXIT_OOM, {"state": "failed", "message": "CUDA ran out of memory. Try, in this order: 1) "
                                     "datasets[0].num_frames: 41 → 33"})
    assert oom.state == "failed" and not oom.retry
    assert oom.reason.startswith("oom: ") and "num_frames: 41 → 33" in oom.reason  # the advice is in the reason
    nan = classify(jobdir.EXIT_NAN, {"state": "failed"})
    assert nan.reason.startswith("nan: ") and "learning rate" in nan.reason and not nan.retry
    assert classify(jobdir.EXIT_DATA, {"message": "no usable clip"}).reason == "data"
    assert classify(jobdir.EXIT_CONFIG, None).reason == "config"
    assert classify(jobdir.EXIT_LOCKED, None).state == "running"  # another trainer runs it: watch that one


def test_crashes_and_signals_are_retried_and_user_actions_win() -> None:
    killed = classify(-signal.SIGKILL, {"state": "running"})
    assert killed.retry and killed.reason == "killed" and "SIGKILL" in killed.message
    crash = classify(1, {"state": "failed", "reason": "crash", "message": "RuntimeError: boom"})
    assert crash.retry and crash.reason == "crash" and "boom" in crash.message
    assert classify(143, {"state": "stopped"}).reason == "stopped"
    # an adopted trainer (exit status unknown) is judged by its status.json
    assert classify(None, {"state": "completed", "step": 9}).state == "completed"
    assert classify(None, {"state": "paused"}).state == "paused"
    assert classify(None, {"state": "failed", "reason": "oom", "message": "x"}).reason == "oom: x"
    assert classify(None, {"state": "running"}).retry
    # a cancel is a cancel however the trainer went, unless it had already finished
    assert classify(143, {"state": "stopped"}, cancel=True).state == "cancelled"
    assert classify(-signal.SIGKILL, None, cancel=True).state == "cancelled"
    assert classify(0, None, cancel=True).state == "completed"


def test_trainer_environment_pins_gpus_and_keeps_multicast_off() -> None:
    env = trainer_env(3, ["1", "2"], 0)
    assert env["CUDA_VISIBLE_DEVICES"] == "1,2" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert {k: env[k] for k in MULTICAST_OFF} == {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                                                  "NVSHMEM_DISABLE_NVLS": "1"}
    assert env["WANLORA_JOB_ID"] == "3"


def test_several_gpus_launch_through_torchrun(tmp_path) -> None:  # noqa: ANN001
    from wanlora.engine.config.io import job_from_dict, save_job

    save_job(job_from_dict({"job": {"name": "multi", "gpus": [0, 1]}}), tmp_path / "job.toml")
    one = trainer_command(tmp_path, ["0"])
    assert one[1:] == ["-m", "wanlora.engine.train", str(tmp_path)]
    two = trainer_command(tmp_path, ["0", "1"])
    assert two[1:3] == ["-m", "wanlora.engine.train.torchrun"] and "--nproc-per-node" in two and two[-2:] == ["wanlora.engine.train", str(tmp_path)]
