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
    parser.add_argument("--vram-gib", type=float, default=None, metavar="G",
                        help="estimate for a card of G GiB (as `wanlora trial --vram-gib G`): vram_tier \"auto\" "
                             "resolves for it and the checkpoint plan is made for it")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.config import gpu
    from wanlora.engine.config.presets import resolve_file
    from wanlora.engine.estimate import (
        MEASURED_TOKENS,
        card_gib,
        format_duration,
        guide_hours,
        oom_ladder,
        peak_vram,
        step_time,
    )

    tier = None if args.tier is None else (args.tier if args.tier == "auto" else int(args.tier))
    r = resolve_file(args.job, tier=tier, detected_vram_gb=args.vram_gib)
    job = r.job
    name = args.gpu
    free = total = None
    if name is None:
        chosen = gpu.chosen_gpus(job.job.gpus, gpu.detect_gpus())
        if chosen:
            name, free = chosen[0].name, min(g.free_gb for g in chosen)
            total = min(g.total_gb for g in chosen)
    if args.vram_gib is not None:
        total = free = args.vram_gib if free is None else min(free, args.vram_gib)
    card = card_gib(r.tier, total)  # what the trainer will plan its activations against
    mem = peak_vram(job, card)
    t = step_time(job, gpu_name=name, tier=r.tier, budget_gib=card)
    budget = free if free is not None else card
    ladder = oom_ladder(job, budget) if budget is not None and mem.need_gib > budget else []
    lo, hi = guide_hours(job.training.steps)
    if args.json:
        print(json.dumps({
            "peak_vram_gib": mem.peak_gib, "need_gib": mem.need_gib, "beyond_measured": mem.beyond_measured, "parts": mem.parts, "worst_bucket": mem.worst,
            "budget_gib": budget, "s_per_step": t.s_per_step, "hours": round(t.hours, 4), "gpu": t.gpu, "source": t.source,
            "buckets": [{"tokens": b.tokens, "s_per_step": b.s_per_step, "checkpointed_blocks": b.plan.checkpointed,
                         "saved_attention": b.plan.keep_attention} for b in t.buckets],
            "notes": t.notes, "guide_hours_h100": [lo, hi], "recipe": r.recipe, "tier": r.tier,
            "oom_ladder": [{"key": s.key, "change": s.change, "need_gib": s.need_gib} for s in ladder]}, indent=2))
        return 0
    tier = f"{r.tier} GB ({r.tier_source})" if r.tier else "none (no GPU found; pass --tier)"
    print(f"{args.job}: recipe {r.recipe or 'custom'}, VRAM tier {tier}")
    print(f"peak VRAM ≈ {mem.peak_gib:.1f} GiB allocated, ≈ {mem.need_gib:.1f} GiB with allocator overhead "
          f"(bucket setting the peak: {mem.worst})")
    for part, gib in mem.parts.items():
        print(f"  {gib:6.1f} GiB  {part}")
    if budget is not None:
        verdict = "fits" if mem.need_gib <= budget else "does NOT fit"
        print(f"  {verdict} in {budget:.1f} GiB" + (" (free on the GPU)" if free is not None else f" ({r.tier} GB tier's card)"))
    if mem.beyond_measured:
        print(f"  {mem.largest_tokens} tokens ({mem.largest}) is past the largest bucket measured to train ({MEASURED_TOKENS}): a lower bound; "
              "run `wanlora trial` on the job to know")
    for s in ladder:
        print(f"  OOM ladder: {s.key}: {s.change} → ≈{s.need_gib:.0f} GiB")
    print(f"time on {t.gpu}: ≈ {t.s_per_step:.2f} s/step × {job.training.steps} steps ≈ {format_duration(t.hours)}")
    for n in t.notes:
        print(f"  {n}")
    print(f"  source: {t.source}")
    print(f"  the guide's ai-toolkit on an H100 for {job.training.steps} steps: {lo:.0f}–{hi:.0f} h")
    return 0
