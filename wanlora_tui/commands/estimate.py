"""``wanlora estimate JOB.toml``: peak VRAM and wall time of a job on this GPU (or its tier), before it runs."""

from __future__ import annotations

import argparse
import json

HELP = "estimated peak VRAM, seconds per step and hours for a job on this GPU"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "estimate") -> None:
    parser.add_argument("job", metavar="JOB.toml", help="the job file")
    parser.add_argument("--gpu", default=None, metavar="NAME",
                        help='GPU to estimate for, e.g. "H100" or "RTX 4090" (default: the detected one, else the tier\'s)')
    parser.add_argument("--tier", choices=["auto", "12", "24", "32", "48", "80", "141"], default=None,
                        help="resolve for this VRAM tier instead of the file's job.vram_tier")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.config import gpu
    from wanlora.engine.config.presets import resolve_file
    from wanlora.engine.estimate import MEASURED_TOKENS, guide_hours, oom_ladder, peak_vram, step_time

    tier = None if args.tier is None else (args.tier if args.tier == "auto" else int(args.tier))
    r = resolve_file(args.job, tier=tier)
    job = r.job
    name = args.gpu
    free = None
    if name is None:
        chosen = gpu.chosen_gpus(job.job.gpus, gpu.detect_gpus())
        if chosen:
            name, free = chosen[0].name, min(g.free_gb for g in chosen)
    mem = peak_vram(job)
    t = step_time(job, gpu_name=name, tier=r.tier)
    budget = free if free is not None else (r.tier * 0.97 if r.tier else None)
    ladder = oom_ladder(job, budget) if budget is not None and mem.need_gib > budget else []
    lo, hi = guide_hours(job.training.steps)
    if args.json:
        print(json.dumps({
            "peak_vram_gib": mem.peak_gib, "need_gib": mem.need_gib, "beyond_measured": mem.beyond_measured, "parts": mem.parts, "worst_bucket": mem.worst,
            "budget_gib": budget, "s_per_step": t.s_per_step, "hours": t.hours, "gpu": t.gpu, "source": t.source,
            "notes": t.notes, "guide_hours_h100": [lo, hi], "recipe": r.recipe, "tier": r.tier,
            "oom_ladder": [{"key": s.key, "change": s.change, "need_gib": s.need_gib} for s in ladder]}, indent=2))
        return 0
    tier = f"{r.tier} GB ({r.tier_source})" if r.tier else "none (no GPU found; pass --tier)"
    print(f"{args.job}: recipe {r.recipe or 'custom'}, VRAM tier {tier}")
    print(f"peak VRAM ≈ {mem.peak_gib:.1f} GiB allocated, ≈ {mem.need_gib:.1f} GiB with allocator overhead "
          f"(largest bucket: {mem.worst})")
    for part, gib in mem.parts.items():
        print(f"  {gib:6.1f} GiB  {part}")
    if budget is not None:
        verdict = "fits" if mem.need_gib <= budget else "does NOT fit"
        print(f"  {verdict} in {budget:.1f} GiB" + (" (free on the GPU)" if free is not None else f" ({r.tier} GB tier)"))
    if mem.beyond_measured:
        print(f"  {mem.tokens} tokens is past the largest bucket measured to train ({MEASURED_TOKENS}): a lower bound; "
              "run `wanlora trial` on the job to know")
    for s in ladder:
        print(f"  OOM ladder: {s.key}: {s.change} → ≈{s.need_gib:.0f} GiB")
    print(f"time on {t.gpu}: ≈ {t.s_per_step:.1f} s/step × {job.training.steps} steps ≈ {t.hours:.1f} h")
    for n in t.notes:
        print(f"  {n}")
    print(f"  source: {t.source}")
    print(f"  the guide's ai-toolkit on an H100 for {job.training.steps} steps: {lo:.0f}–{hi:.0f} h")
    return 0
