"""Refusals the trainer makes itself as well as ``validate``: a job folder written by hand skips validate.

Each is a pure function of the job (torch-free, here in the contract), so ``engine.checks.validate`` and
``engine.train.loop`` report the one same finding.
"""

from __future__ import annotations

from wanlora.engine.config.findings import Finding
from wanlora.engine.config.schema import Job


def unload_with_dop(job: Job) -> Finding | None:
    """``unload_text_encoder`` + DOP, refused by ``validate`` and by the trainer itself (a job folder written by
    hand skips validate): the one definition of that refusal."""
    t = job.training
    if not (t.unload_text_encoder and t.dop.enabled):
        return None
    return Finding("error", "training.unload_text_encoder",
                   "unload_text_encoder encodes only the trigger word once, so DOP's class prompts could not be "
                   "encoded: every preservation prompt would become the trigger and DOP would pull the LoRA back to "
                   "the base model",
                   "set unload_text_encoder = false (use cache_text_embeddings = true to save VRAM instead)")
