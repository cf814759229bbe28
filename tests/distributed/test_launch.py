"""The launch line and environment the daemon uses (torch-free), and the torchrun wrapper's exit codes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from wanlora.engine.config.io import job_from_dict
from wanlora.engine.config.launch import LaunchError, child_env, gpu_count, trainer_command
from wanlora.engine.train.torchrun import exit_code_of

JD = Path("/jobs/7")


def _job(**job: object):
    return job_from_dict({"job": {"name": "orbit", **job}, "datasets": [{"folder": "/data"}]})


def test_one_gpu_runs_the_trainer_directly() -> None:
    assert trainer_command(_job(), JD, "py", gpus=[3], env={}) == ["py", "-m", "wanlora.engine.train", str(JD)]


def test_several_gpus_run_torchrun_standalone() -> None:
    cmd = trainer_command(_job(gpus=[0, 1]), JD, "py", gpus=[2, 5], env={})
    assert cmd == ["py", "-m", "wanlora.engine.train.torchrun", "--nproc-per-node", "2", "--standalone",
                   "-m", "wanlora.engine.train", str(JD)]


def test_cpu_processes_override_the_gpus() -> None:
    cmd = trainer_command(_job(), JD, "py", gpus=[], env={"WANLORA_CPU_PROCS": "3"})
    assert cmd[3:6] == ["--nproc-per-node", "3", "--standalone"] and cmd[-1] == "--cpu"


def test_several_nodes_use_the_rendezvous_endpoint() -> None:
    env = {"WANLORA_RDZV_ENDPOINT": "10.0.0.5:29400"}
    cmd = trainer_command(_job(gpus="all", nodes=2), JD, "py", gpus=[0, 1, 2, 3], env=env)
    assert "--standalone" not in cmd
    i = cmd.index("--rdzv-endpoint")
    assert cmd[i + 1] == "10.0.0.5:29400" and cmd[cmd.index("--rdzv-id") + 1] == "orbit"
    assert cmd[cmd.index("--nnodes") + 1] == "2" and cmd[cmd.index("--nproc-per-node") + 1] == "4"
    with pytest.raises(LaunchError, match="WANLORA_RDZV_ENDPOINT"):
        trainer_command(_job(nodes=2), JD, "py", gpus=[0], env={})


def test_gpu_count() -> None:
    assert (gpu_count("auto", 8), gpu_count("all", 8), gpu_count([1, 3], 8)) == (1, 8, 2)


def test_child_env_reserves_gpus_and_keeps_nvlink_multicast_off() -> None:
    env = child_env({"PATH": "/bin", "NCCL_NVLS_ENABLE": "0"}, gpus=[2, 3])
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert (env["NCCL_NVLS_ENABLE"], env["TORCH_SYMM_MEM_DISABLE_MULTICAST"], env["NVSHMEM_DISABLE_NVLS"]) == ("0", "1", "1")
    assert int(env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]) >= 60


def test_the_group_exits_with_the_trainers_code() -> None:
    f = lambda code: SimpleNamespace(exitcode=code)  # noqa: E731
    assert exit_code_of({0: f(75), 1: f(75)}) == 75  # paused, not torchrun's generic 1
    assert exit_code_of({1: f(-15), 0: f(143)}) == 143
    assert exit_code_of({1: f(-9)}) == 137
    assert exit_code_of({}) == 1


def test_the_daemon_launches_through_it(tmp_path: Path) -> None:
    from wanlora.daemon import runner
    from wanlora.engine.config.io import save_job

    save_job(_job(gpus=[0, 1]), tmp_path / "job.toml")
    cmd = runner.trainer_command(tmp_path, ["0", "1"])
    assert cmd[1:5] == ["-m", "wanlora.engine.train.torchrun", "--nproc-per-node", "2"]
    assert runner.trainer_command(tmp_path, ["1"])[1:] == ["-m", "wanlora.engine.train", str(tmp_path)]
