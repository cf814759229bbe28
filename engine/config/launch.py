"""The command line and environment that start a trainer, for 1 GPU, N GPUs or several nodes (torch-free).

The daemon (and ``wanlora`` tools) import this to launch ``JOB_DIR`` on the GPUs they reserved:

- one process: ``python -m wanlora.engine.train JOB_DIR``;
- N GPUs on this machine: ``python -m wanlora.engine.train.torchrun --standalone --nproc-per-node N -m wanlora.engine.train
  JOB_DIR`` — torchrun itself, wrapped only so the group exits with the trainer's own code (pause = 75 …)
  instead of torchrun's generic 1;
- ``job.nodes`` > 1: the same with ``--nnodes/--rdzv-backend c10d/--rdzv-endpoint/--rdzv-id`` (start the
  same job on every node; see docs/multi-node.md).

The processes of one launch share a process group (the daemon's session), so signalling the group reaches
every rank; ``run.lock`` is held by rank 0.  ``WANLORA_CPU_PROCS=N`` runs N CPU processes over gloo
instead (tests, machines without a GPU).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from wanlora.engine.config.schema import Job

CPU_PROCS_ENV = "WANLORA_CPU_PROCS"
RDZV_ENDPOINT_ENV = "WANLORA_RDZV_ENDPOINT"  # host:port of node 0, same on every node
RDZV_ID_ENV = "WANLORA_RDZV_ID"  # optional; default = the job name
# Seconds torchrun waits, after forwarding SIGTERM, for ranks to finish their step and save a state.
SHUTDOWN_TIMEOUT_S = 300

# NVLink multicast (NVLS/symmetric memory) stays off in every child environment (see KINDS.md).
NVLS_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


class LaunchError(ValueError):
    """The job cannot be launched as configured (e.g. several nodes but no rendezvous endpoint)."""


def nvls_off_env() -> dict[str, str]:
    return dict(NVLS_OFF)


# Buckets of different sizes fragment the CUDA caching allocator; expandable segments avoid the OOMs seen
# at 41x480x832 and 81x480x832 on an H200 and 81x768^2 on an H100 without them (BENCHMARKS.md).
TRAINER_ENV = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", **NVLS_OFF}


# torch.compile's caches (inductor's compiled kernels, FX and autograd graphs) under WANLORA_HOME instead of
# /tmp: a rented container keeps WANLORA_HOME on its volume, so a bucket's compile warm-up is paid once per
# machine and torch version, not once per run.
COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
# FlashAttention-4's CuTe kernels are compiled at a process's first attention call (10-20 s); its own on-disk
# cache (off unless asked for) keeps them beside inductor's, so a resumed job or the next trial loads them.
FA4_CACHE_ENV = "FLASH_ATTENTION_CUTE_DSL_CACHE_DIR"


def compile_cache_dir() -> Path:
    from wanlora.engine.config.paths import wanlora_home

    return wanlora_home() / "cache" / "compile"


def use_trainer_env() -> None:
    """Set the trainer's own CUDA environment in this process (before torch touches CUDA), keeping what the
    user set: the trainer, ``wanlora trial``, ``wanlora sample`` and every bench script call it first."""
    for k, v in TRAINER_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault(COMPILE_CACHE_ENV, str(compile_cache_dir()))
    os.environ.setdefault("FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED", "1")
    os.environ.setdefault(FA4_CACHE_ENV, str(compile_cache_dir() / "fa4"))


def cpu_procs(env: Mapping[str, str] | None = None) -> int:
    """``WANLORA_CPU_PROCS`` as a count (0 when unset or invalid)."""
    env = os.environ if env is None else env
    try:
        return max(0, int(env.get(CPU_PROCS_ENV, "0") or 0))
    except ValueError:
        return 0


def gpu_count(job_gpus: object, available: int) -> int:
    """How many GPUs ``job.gpus`` asks for on a machine with ``available`` GPUs: auto = 1, all = every one."""
    if job_gpus == "auto":
        return 1 if available else 0
    if job_gpus == "all":
        return available
    if isinstance(job_gpus, list):
        return len(job_gpus)
    raise LaunchError(f"job.gpus = {job_gpus!r}: expected \"auto\", \"all\" or a list like [0, 1]")


# ---------------------------------------------------------------- how several processes split the work
SINGLE, DATA, EXPERT = "single", "data", "expert"


def expert_parallel_blockers(job: Job, world_size: int) -> list[str]:
    """Why ``world_size`` processes cannot train ``job`` expert-parallel (empty: they can).

    Expert-parallel puts half the processes on each expert for the whole run, so it needs an even count,
    both experts trained, and nothing that needs both experts in one process mid-run (previews, eval loss)
    or that shards one expert over all processes (fsdp).
    """
    out = []
    if world_size < 2 or world_size % 2:
        out.append(f"{world_size} process(es): expert-parallel needs an even number of GPUs (2, 4, ...)")
    if len(job.multistage.trained()) != 2:
        out.append("only one expert trains (multistage.high_noise / low_noise)")
    if job.advanced.fsdp:
        out.append("advanced.fsdp shards each expert over every GPU")
    if job.sample.enabled:
        out.append("sample.enabled: previews need both experts in one process")
    if any(d.is_eval or d.eval_fraction > 0 for d in job.datasets):
        out.append("eval datasets: the eval loss at each save needs both experts in one process")
    return out


def multi_gpu_mode(job: Job, world_size: int) -> tuple[str, str]:
    """``(mode, why)``: how ``world_size`` processes split the job — ``single``, ``data`` or ``expert``.

    The rule (``advanced.multi_gpu = "auto"``): expert-parallel whenever it is possible
    (:func:`expert_parallel_blockers` is empty), because it is never slower than data-parallel alternation
    at the same samples/s per GPU (apart from an idle tail when the experts' step counts differ) and removes its costs: each GPU holds one expert (no swapping with
    ``low_vram``, memory for one expert instead of two, so less checkpointing) and ``switch_every`` costs
    nothing.  ``"data"`` forces data-parallel; ``"expert"`` where it is impossible is a config error.
    """
    if world_size <= 1:
        return SINGLE, "one process"
    choice = job.advanced.multi_gpu
    blockers = expert_parallel_blockers(job, world_size)
    if choice == DATA:
        return DATA, "advanced.multi_gpu = \"data\""
    if choice == EXPERT:
        if blockers:
            raise LaunchError("advanced.multi_gpu = \"expert\" cannot run here: " + "; ".join(blockers)
                              + ". Fix that, or set advanced.multi_gpu = \"auto\" (or \"data\")")
        return EXPERT, "advanced.multi_gpu = \"expert\""
    if blockers:
        return DATA, "auto: data-parallel, because " + "; ".join(blockers)
    return EXPERT, (f"auto: {world_size // 2} GPU(s) per expert, both experts train at once and stay resident")


def describe_multi_gpu(job: Job, world_sizes: Sequence[int] = (2, 4, 8)) -> list[str]:
    """One line per GPU count: the mode :func:`multi_gpu_mode` picks and why (``wanlora show``)."""
    lines = []
    for n in world_sizes:
        try:
            mode, why = multi_gpu_mode(job, n)
        except LaunchError as e:
            mode, why = "error", str(e)
        lines.append(f"{n} GPUs: {mode}-parallel ({why})")
    return lines


def trainer_command(job: Job, job_dir: Path | str, python: str | None = None, *, gpus: Sequence[int] = (),
                    env: Mapping[str, str] | None = None) -> list[str]:
    """argv that trains ``job_dir`` on ``gpus`` (the physical indices reserved for it).

    One process when one GPU (or none) and one node; torchrun otherwise.  Environment read (``env``,
    default ``os.environ``): ``WANLORA_CPU_PROCS``, ``WANLORA_RDZV_ENDPOINT``, ``WANLORA_RDZV_ID``.
    """
    env = os.environ if env is None else env
    python = python or sys.executable
    job_dir = str(job_dir)
    nodes = int(job.job.nodes)
    cpu = cpu_procs(env)
    nproc = cpu or max(1, len(gpus))
    tail = ["-m", "wanlora.engine.train", job_dir] + (["--cpu"] if cpu else [])
    if nproc == 1 and nodes == 1:
        return [python, *tail]
    cmd = [python, "-m", "wanlora.engine.train.torchrun", "--nproc-per-node", str(nproc)]
    if nodes == 1:
        cmd.append("--standalone")
    else:
        endpoint = env.get(RDZV_ENDPOINT_ENV, "").strip()
        if not endpoint:
            raise LaunchError(f"job.nodes = {nodes} needs the rendezvous address of node 0: set "
                              f"{RDZV_ENDPOINT_ENV}=HOST:PORT on every node (docs/multi-node.md)")
        rdzv_id = env.get(RDZV_ID_ENV, "").strip() or job.job.name
        cmd += ["--nnodes", str(nodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                "--rdzv-id", rdzv_id]
    return cmd + tail


def child_env(base: Mapping[str, str] | None = None, gpus: Sequence[int] = ()) -> dict[str, str]:
    """The trainer's environment: ``base`` + the reserved GPUs as CUDA_VISIBLE_DEVICES + NVLink multicast
    off (kept if already set) + torchrun's shutdown grace period."""
    env = dict(os.environ if base is None else base)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(int(g)) for g in gpus)
    for k, v in TRAINER_ENV.items():
        env.setdefault(k, v)
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


__all__ = [
    "CPU_PROCS_ENV", "RDZV_ENDPOINT_ENV", "RDZV_ID_ENV", "NVLS_OFF", "TRAINER_ENV", "use_trainer_env", "LaunchError", "nvls_off_env", "cpu_procs",
    "gpu_count", "trainer_command", "child_env", "SINGLE", "DATA", "EXPERT", "expert_parallel_blockers",
    "multi_gpu_mode", "describe_multi_gpu",
]
