"""``wanlora cache JOB``: precompute the job's VAE latents and text embeddings before training.

Training does the same automatically when ``cache_latents`` / ``cache_text_embeddings`` are on; running
it ahead (e.g. while the GPU is still being set up, or on another machine that shares the dataset
folder) makes the job start training at once.  Entries are shared by every job over the same clips
with the same settings.  JOB is a job file (presets resolved, as ``wanlora submit`` would) or a job
folder holding ``job.toml``.
"""

from __future__ import annotations

import argparse
import sys

HELP = "precompute latents and text embeddings for a job (also done automatically when training)"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "cache") -> None:
    parser.add_argument("job", help="job file (.toml) or job folder")
    parser.add_argument("--cpu", action="store_true", help="encode on the CPU even if a GPU is present")


def run(args: argparse.Namespace) -> int:
    from wanlora.tui.commands._job_arg import load_job_arg

    job = load_job_arg(args.job)
    if job is None:
        return 1
    tr = job.training
    if not (tr.cache_text_embeddings or tr.unload_text_encoder or any(d.cache_latents for d in job.datasets)):
        print("nothing to cache: turn on datasets[].cache_latents and/or training.cache_text_embeddings")
        return 0
    import torch
    from wanlora.engine.cache.prepare import cache_job
    from wanlora.engine.data.dataset import DataExhausted
    from wanlora.engine.model.load import ModelLoadError

    def emit(_type: str, **ev) -> None:
        line = f"{ev['what']:8s} {ev['done']}/{ev['total']}  ({ev['computed']} computed"
        if "reused" in ev:
            line += f", {ev['reused']} reused"
            if ev.get("failed"):
                line += f", {ev['failed']} unreadable"
        print(line + ")", flush=True)

    def warn(message: str, path: str | None = None) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    device = torch.device("cpu") if args.cpu or not torch.cuda.is_available() else torch.device("cuda")
    from wanlora.tui.progress import quiet_libraries

    quiet_libraries()
    print(f"caching for {len(job.datasets)} dataset(s) on the {device.type.upper()}: loading the VAE/text encoder "
          f"of {job.model.name_or_path} …", flush=True)
    try:
        inputs = cache_job(job, device=device, emit=emit, warn=warn)
    except (ModelLoadError, DataExhausted) as e:
        print(str(e), file=sys.stderr)
        return 1
    for d, folder in sorted(inputs.cache_dirs.items()):
        print(f"datasets[{d}] cache: {folder}")
    return 0
