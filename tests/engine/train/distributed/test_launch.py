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


def test_expert_parallel_is_chosen_when_it_can_run() -> None:
    """auto: expert-parallel on an even count with both experts trained; data-parallel (saying why) else."""
    from wanlora.engine.config.launch import describe_multi_gpu, multi_gpu_mode

    both = _job()
    assert multi_gpu_mode(both, 1)[0] == "single"
    assert multi_gpu_mode(both, 2)[0] == "expert" and multi_gpu_mode(both, 4)[0] == "expert"
    mode, why = multi_gpu_mode(both, 3)
    assert mode == "data" and "even number" in why
    one = job_from_dict({"job": {"name": "o"}, "datasets": [{"folder": "/d"}], "multistage": {"low_noise": False}})
    assert multi_gpu_mode(one, 2)[0] == "data"
    for extra, word in (({"advanced": {"fsdp": True}}, "fsdp"), ({"sample": {"enabled": True}}, "previews"),
                        ({"datasets": [{"folder": "/d", "eval_fraction": 0.2}]}, "eval")):
        j = job_from_dict({"job": {"name": "o"}, "datasets": [{"folder": "/d"}], **extra})
        mode, why = multi_gpu_mode(j, 2)
        assert mode == "data" and word in why
    forced = job_from_dict({"job": {"name": "o"}, "datasets": [{"folder": "/d"}], "advanced": {"multi_gpu": "data"}})
    assert multi_gpu_mode(forced, 2)[0] == "data"
    wanted = job_from_dict({"job": {"name": "o"}, "datasets": [{"folder": "/d"}], "advanced": {"multi_gpu": "expert"}})
    assert multi_gpu_mode(wanted, 4)[0] == "expert"
    with pytest.raises(LaunchError, match="advanced.multi_gpu"):
        multi_gpu_mode(wanted, 3)
    assert describe_multi_gpu(both, (2, 3))[0].startswith("2 GPUs: expert-parallel")
