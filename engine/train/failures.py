"""What to tell the user when a run fails: the guide's OOM ladder tailored to the job, NaN advice.

Pure functions of the job, so the same text shows in events, status and ``wanlora validate``.
"""

from __future__ import annotations

from wanlora.engine.config.schema import Job


def oom_ladder(job: Job) -> list[str]:
    """The guide's out-of-memory ladder, in order, keeping only the rungs this job can still take.

    drop 1024 → frames 41→33→21 → batch 1 → low_vram → nf4 → layer_offloading.
    """
    steps: list[str] = []
    for i, ds in enumerate(job.datasets):
        big = [r for r in ds.resolutions if r >= 1024]
        if big:
            keep = [r for r in ds.resolutions if r < 1024] or [768]
            steps.append(f"datasets[{i}].resolutions: drop {big} → {keep}")
    for i, ds in enumerate(job.datasets):
        for a, b in ((81, 41), (41, 33), (33, 21)):
            if ds.num_frames >= a:
                steps.append(f"datasets[{i}].num_frames: {ds.num_frames} → {b}")
                break
    if job.training.batch_size > 1:
        steps.append(f"training.batch_size: {job.training.batch_size} → 1 "
                     f"(raise training.gradient_accumulation to {job.training.gradient_accumulation * job.training.batch_size} to keep the effective batch)")
    if not job.model.low_vram:
        steps.append("model.low_vram = true (only the active expert on the GPU)")
    if job.quantization.transformer != "nf4":
        steps.append(f"quantization.transformer: {job.quantization.transformer} → nf4")
    if not job.model.layer_offloading:
        steps.append("model.layer_offloading = true (needs ~64 GB of system RAM; ~2× step time)")
    if not job.training.gradient_checkpointing:
        steps.insert(0, "training.gradient_checkpointing = true (video does not fit without it)")
    return steps


def oom_message(job: Job, detail: str = "") -> str:
    ladder = oom_ladder(job)
    head = "CUDA ran out of memory" + (f" ({detail})" if detail else "")
    if not ladder:
        return head + "; every memory saving is already on: use a GPU with more memory."
    return head + ". Try, in this order: " + "; ".join(f"{i + 1}) {s}" for i, s in enumerate(ladder))


def nan_message(step: int, last_checkpoint: str | None, lr: float) -> str:
    where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved yet"
    return (f"the loss became NaN/inf at step {step}; {where}. Lower training.learning_rate "
            f"(now {lr:g}, try {lr / 2:g}), keep training.max_grad_norm on, and check the clips for corrupt frames.")
