"""``wanlora slurm JOB.toml``: print an sbatch script that trains the job on a Slurm allocation.

The job is resolved and checked like ``wanlora submit`` would (recipe, tier; this machine's GPU is not
checked: the cluster's is another), then :mod:`engine.config.slurm` writes the script.  Typical use::

    wanlora slurm orbit.toml --nodes 2 --gpus-per-node 8 --time 1-00:00:00 > orbit.sbatch && sbatch orbit.sbatch
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "print an sbatch script running this job on N nodes x G GPUs through torchrun (docs/multi-node.md)"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "slurm") -> None:
    parser.add_argument("job", metavar="JOB.toml", help="the job file")
    parser.add_argument("--nodes", type=int, default=None, help="machines to allocate (default: the job's job.nodes)")
    parser.add_argument("--gpus-per-node", type=int, default=None,
                        help="GPUs per machine (default: the length of job.gpus when it is a list, else 1)")
    parser.add_argument("--cpu-procs", type=int, default=0, metavar="N",
                        help="no GPUs: N CPU processes per machine over gloo (trying the setup, tests)")
    parser.add_argument("--job-dir", type=Path, default=None,
                        help="the job folder on the shared filesystem (default: ./wanlora-jobs/<job.name>)")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--time", default=None, help="time limit, Slurm's format (e.g. 1-00:00:00); a state is "
                        "saved before it runs out")
    parser.add_argument("--cpus-per-task", type=int, default=None)
    parser.add_argument("--rdzv-port", type=int, default=29400, help="rendezvous port on the first node")
    parser.add_argument("--python", default=None, help="the Python with wanlora installed on the nodes "
                        "(default: this one)")
    parser.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                        help="a further #SBATCH option, e.g. --sbatch=--qos=high (repeatable)")


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.checks.validate import check_file
    from wanlora.engine.config.io import dump_job
    from wanlora.engine.config.launch import LaunchError
    from wanlora.engine.config.slurm import SlurmOptions, sbatch_script
    from wanlora.tui.commands.validate import format_findings

    resolved, findings = check_file(args.job, machine=False)
    errors = [f for f in findings if f.level == "error"]
    if resolved is None or errors:
        print(f"{args.job}: not a runnable job; fix these first:", file=sys.stderr)
        print(format_findings(errors or findings), file=sys.stderr)
        return 1
    job = resolved.job
    gpus = args.gpus_per_node or (len(job.job.gpus) if isinstance(job.job.gpus, list) else 1)
    nodes = args.nodes or int(job.job.nodes)
    job_dir = args.job_dir or Path("wanlora-jobs") / job.job.name
    opts = SlurmOptions(nodes=nodes, gpus_per_node=gpus, cpu_procs=args.cpu_procs, cpus_per_task=args.cpus_per_task,
                        partition=args.partition, account=args.account, time=args.time, rdzv_port=args.rdzv_port,
                        extra=list(args.sbatch))
    # the job folder's copy: every GPU of each node (Slurm hands them out), the allocation's node count
    sized = job.model_copy(update={"job": job.job.model_copy(update={"nodes": nodes, "gpus": "all"})})
    try:
        print(sbatch_script(sized, dump_job(sized), job_dir, opts, args.python or sys.executable), end="")
    except LaunchError as e:
        print(f"{args.job}: {e}", file=sys.stderr)
        return 1
    return 0
