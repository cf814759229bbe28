"""``wanlora slurm``: an sbatch script that runs the same trainer on a Slurm allocation (torch-free).

Slurm only allocates the nodes and starts one task per node (``srun``); inside, each task runs the
launch line of :func:`engine.config.launch.trainer_command` — torchrun with a c10d rendezvous on the
allocation's first node — so the group, the exit codes (75 = paused, 143 = stopped, ...), the job folder
and resume are exactly those of a daemon launch.  The script writes the resolved job into the job folder
only when the folder has none, so submitting the same script again resumes from the newest state.
Slurm's SIGTERM before the time limit (``--signal``) reaches torchrun, which forwards it: the ranks
save a state at the step boundary and exit 143.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from wanlora.engine.config.launch import (
    CPU_PROCS_ENV,
    NVLS_OFF,
    RDZV_ENDPOINT_ENV,
    RDZV_ID_ENV,
    SHUTDOWN_TIMEOUT_S,
    TRAINER_ENV,
    LaunchError,
    multi_gpu_mode,
    trainer_command,
)
from wanlora.engine.config.schema import Job

_EP, _ID = "@@RDZV_ENDPOINT@@", "@@RDZV_ID@@"
JOB_TOML_MARK = "WANLORA_JOB_TOML"


@dataclass
class SlurmOptions:
    """What the allocation looks like; everything else comes from the job file."""

    nodes: int = 1
    gpus_per_node: int = 1
    cpu_procs: int = 0  # >0: that many CPU processes per node over gloo instead of GPUs (tests, no GPU)
    cpus_per_task: int | None = None
    partition: str | None = None
    account: str | None = None
    time: str | None = None  # Slurm's format, e.g. 2-00:00:00
    rdzv_port: int = 29400
    stop_grace_s: int = SHUTDOWN_TIMEOUT_S  # SIGTERM this long before the time limit: a state is saved
    extra: list[str] = field(default_factory=list)  # further #SBATCH options, e.g. "--qos=high"

    def check(self) -> None:
        if self.nodes < 1 or self.nodes > 64:
            raise LaunchError(f"--nodes {self.nodes}: use 1 to 64 (job.nodes has the same range)")
        if self.cpu_procs < 0 or (not self.cpu_procs and self.gpus_per_node < 1):
            raise LaunchError(f"--gpus-per-node {self.gpus_per_node}: use 1 or more (or --cpu-procs N without GPUs)")
        if not 1 <= self.rdzv_port <= 65535:
            raise LaunchError(f"--rdzv-port {self.rdzv_port}: use a free TCP port, e.g. 29400")


def _arg(a: str) -> str:
    if a == _EP:
        return f'"${RDZV_ENDPOINT_ENV}"'
    if a == _ID:
        return f'"${RDZV_ID_ENV}"'
    return shlex.quote(a)


def sbatch_script(job: Job, job_toml: str, job_dir: Path | str, opts: SlurmOptions, python: str) -> str:
    """The script's text: ``#SBATCH`` lines, NVLink multicast off, the rendezvous, ``srun`` the launch line."""
    opts.check()
    if any(line.strip() == JOB_TOML_MARK for line in job_toml.splitlines()):
        raise LaunchError(f"the job file holds a line {JOB_TOML_MARK!r}, which ends the script's copy of it; rename it")
    job_dir = str(Path(job_dir).absolute())
    per_node = opts.cpu_procs or opts.gpus_per_node
    world = opts.nodes * per_node
    sized = job.model_copy(update={"job": job.job.model_copy(update={"nodes": opts.nodes})})
    mode, why = multi_gpu_mode(sized, world)
    # the same launch line the daemon uses, with the rendezvous filled in by the script at run time
    env = {RDZV_ENDPOINT_ENV: _EP, RDZV_ID_ENV: _ID, **({CPU_PROCS_ENV: str(opts.cpu_procs)} if opts.cpu_procs else {})}
    cmd = trainer_command(sized, job_dir, python, gpus=list(range(per_node)) if not opts.cpu_procs else [], env=env)
    name = job.job.name
    sb = [f"--job-name={name}", f"--nodes={opts.nodes}", "--ntasks-per-node=1",
          "--output=slurm-%x-%j.out"]  # in the submission folder: the job folder may not exist yet
    if not opts.cpu_procs:
        sb.append(f"--gpus-per-node={opts.gpus_per_node}")
    if opts.cpus_per_task:
        sb.append(f"--cpus-per-task={opts.cpus_per_task}")
    for key, val in (("partition", opts.partition), ("account", opts.account), ("time", opts.time)):
        if val:
            sb.append(f"--{key}={val}")
    if opts.time:
        sb.append(f"--signal=TERM@{opts.stop_grace_s}")  # save a state before the time limit
    sb += [e if e.startswith("--") else f"--{e}" for e in opts.extra]
    lines = ["#!/bin/bash", *(f"#SBATCH {s}" for s in sb), "",
             f"# wanlora: job {name!r} on {opts.nodes} node(s) x {per_node} {'CPU process' if opts.cpu_procs else 'GPU'}(s)"
             f" = {world}: {mode}-parallel ({why})",
             "# Submit again to resume from the newest state in the job folder (docs/multi-node.md).",
             "set -euo pipefail", ""]
    for k, v in {**TRAINER_ENV, **NVLS_OFF}.items():  # NVLink multicast off, as in every launch
        lines.append(f"export {k}={shlex.quote(v)}")
    lines += [f"export TORCH_ELASTIC_SHUTDOWN_TIMEOUT={opts.stop_grace_s}", "export PYTHONUNBUFFERED=1"]
    if opts.cpu_procs:
        lines.append(f"export {CPU_PROCS_ENV}={opts.cpu_procs}")
    lines += ["",
              f"JOB_DIR={shlex.quote(job_dir)}",
              'mkdir -p "$JOB_DIR"',
              'if [ ! -f "$JOB_DIR/job.toml" ]; then  # first submission; a resubmission keeps the job and resumes',
              f"  cat > \"$JOB_DIR/job.toml.tmp\" <<'{JOB_TOML_MARK}'",
              job_toml.rstrip("\n"),
              JOB_TOML_MARK,
              '  mv "$JOB_DIR/job.toml.tmp" "$JOB_DIR/job.toml"',
              "fi", "",
              "# rendezvous on the allocation's first node (torchrun c10d)",
              # no `| head -n 1`: under pipefail scontrol's SIGPIPE (exit 141) would end the script at random
              'mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
              'HEAD_NODE=${NODES[0]}',
              f'export {RDZV_ENDPOINT_ENV}="${{{RDZV_ENDPOINT_ENV}:-$HEAD_NODE:{opts.rdzv_port}}}"',
              f'export {RDZV_ID_ENV}="${{{RDZV_ID_ENV}:-slurm-$SLURM_JOB_ID}}"', "",
              "# one task per node; each runs torchrun with --nproc-per-node processes; the script exits with the",
              "# trainer's code (0 done, 75 paused, 143 stopped, ...)",
              "srun --kill-on-bad-exit=1 --ntasks-per-node=1 " + " ".join(_arg(a) for a in cmd)]
    return "\n".join(lines) + "\n"


__all__ = ["SlurmOptions", "sbatch_script", "JOB_TOML_MARK"]
