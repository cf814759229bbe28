"""``wanlora trial JOB [--steps N] [--json]``: run the job's real trainer path here, with random weights.

Before downloading ~70 GB and renting for days: the job's clips through decode, buckets and caching, both
experts under the job's plan for a few steps per bucket, a checkpoint write and one preview — then s/step,
peak VRAM and the projected wall time of the whole job, per bucket.  Writes nothing into the job's
folders.  Without CUDA it runs the tiny architecture and says so.  ``--vram-gib`` behaves as a smaller
card (e.g. 24 or 80) to check a tier's plan on a bigger GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = "try the job on this GPU with random full-size weights: s/step, VRAM, projected hours"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "trial") -> None:
    parser.add_argument("job", help="job file (.toml) or job folder")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per bucket and expert (default 3)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (docs/contracts.md)")
    parser.add_argument("--vram-gib", type=float, default=None, help="act as a card of this many GiB")
    parser.add_argument("--keep", default=None, help="keep the trial's folder here (default: a temp folder, removed)")
    parser.add_argument("--cpu", action="store_true", help="run the tiny architecture on the CPU even with a GPU")
    parser.add_argument("--no-preview", action="store_true", help="skip the preview even if the job samples")
    parser.add_argument("--preview-steps", type=int, default=None, metavar="N",
                        help="render the preview with N denoising steps (same memory; its time is scaled to the "
                             "job's sample.steps): a quicker fit check")
    parser.add_argument("--profile", action="store_true",
                        help="profile one more step per bucket: time per kind of kernel, idle time, TFLOP/s")
    parser.add_argument("--clips", type=int, default=None, metavar="N",
                        help="cache and train on the first N clips of each dataset only; caching is projected to all")
    parser.add_argument("--memory-snapshot", default=None, metavar="DIR",
                        help="CUDA: write each bucket's allocation history to DIR/BUCKET.pickle (pytorch.org/memory_viz)")
    parser.add_argument("--plan", choices=["auto", "greedy", "frugal"], default="auto",
                        help="force the checkpoint plan: greedy = none (checks the OOM fallback), frugal = every block")


def _tier_used(job: object, vram_gib: float | None) -> str:
    """Which VRAM tier's settings the job runs with, and why (the report names it)."""
    from wanlora.engine.config import gpu

    declared = job.job.vram_tier  # type: ignore[attr-defined]
    if declared != "auto":
        return f"{declared} (declared in the job)"
    if vram_gib is not None:
        return f"{gpu.pick_tier(vram_gib)} (auto, for --vram-gib {vram_gib:g})"
    free = gpu.free_vram_for(job.job.gpus, gpu.detect_gpus())  # type: ignore[attr-defined]
    return f"{gpu.pick_tier(free)} (auto, {free:.1f} GiB free)" if free is not None else "none (auto, no GPU)"


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.config.findings import JobError
    from wanlora.engine.config.launch import use_trainer_env
    from wanlora.tui.commands._job_arg import load_job_arg

    if args.steps < 1:
        print("--steps must be at least 1", file=sys.stderr)
        return 2
    if args.preview_steps is not None and args.preview_steps < 1:
        print("--preview-steps must be at least 1", file=sys.stderr)
        return 2
    if args.clips is not None and args.clips < 1:
        print("--clips must be at least 1 (leave it out to use every clip)", file=sys.stderr)
        return 2
    job = load_job_arg(args.job, vram_gib=args.vram_gib)
    if job is None:
        return 1
    tier = _tier_used(job, args.vram_gib)
    use_trainer_env()  # before torch touches CUDA: the trainer process's own allocator settings
    import torch
    from wanlora.engine.data.dataset import DataExhausted
    from wanlora.engine.model.load import ModelLoadError
    from wanlora.engine.trial import format_report, run_trial

    device = torch.device("cpu") if args.cpu or not torch.cuda.is_available() else torch.device("cuda")
    if device.type == "cpu":
        print("no CUDA here: the trial runs the tiny Wan 2.2 architecture on the CPU (times and memory are not "
              "those of the full model)", file=sys.stderr, flush=True)

    t0 = time.monotonic()

    def progress(line: str) -> None:  # seconds since start: where a slow trial spends its time
        print(f"trial [{time.monotonic() - t0:6.1f} s]: {line}", file=sys.stderr, flush=True)

    try:
        report = run_trial(job, steps=args.steps, progress=progress, device=device, vram_gib=args.vram_gib,
                           keep=Path(args.keep) if args.keep else None, plan=args.plan,
                           preview=not args.no_preview, profile=args.profile, clips=args.clips,
                           memory_snapshots=Path(args.memory_snapshot) if args.memory_snapshot else None,
                           tier=tier, preview_steps=args.preview_steps)
    except (ModelLoadError, DataExhausted, JobError) as e:
        print(f"trial failed: {e}", file=sys.stderr)
        return 1
    except torch.OutOfMemoryError as e:
        print(f"trial ran out of GPU memory: {str(e).splitlines()[0][:300]}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    failed = [b["bucket"] for b in report["buckets"] if "oom" in b] + (
        ["the preview"] if "oom" in (report.get("preview") or {}) else [])
    if failed:
        print(f"trial: {', '.join(failed)} ran out of GPU memory even with every block checkpointed; the job would "
              "fail there", file=sys.stderr)
        return 1
    return 0
