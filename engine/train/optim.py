"""Optimizer and learning-rate schedule for the LoRA parameters of one expert.

The schedule is a pure function of the global step (warm-up, then constant / cosine / linear decay), set
on the optimizer before each step — nothing to save for resume beyond the step itself.
"""

from __future__ import annotations

import math

import torch


class OptimizerUnavailable(RuntimeError):
    """The configured optimizer cannot run here (e.g. 8-bit AdamW without CUDA or bitsandbytes)."""


def build_optimizer(params: list[torch.nn.Parameter], name: str, lr: float, weight_decay: float,
                    device: torch.device) -> torch.optim.Optimizer:
    """AdamW (torch) or 8-bit AdamW (bitsandbytes, CUDA only)."""
    if name == "adamw":
        # fused on CUDA: one kernel for all LoRA tensors (what bench/step.py measured)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8,
                                 fused=device.type == "cuda")
    if name == "adamw8bit":
        if device.type != "cuda":
            raise OptimizerUnavailable("training.optimizer = \"adamw8bit\" needs a CUDA GPU (bitsandbytes); "
                                       "use \"adamw\" on this machine")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise OptimizerUnavailable("training.optimizer = \"adamw8bit\" needs bitsandbytes: "
                                       "pip install 'wanlora[cuda]' (or bitsandbytes), or use \"adamw\"") from None
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8)
    raise OptimizerUnavailable(f"unknown optimizer {name!r}; expected adamw or adamw8bit")


def lr_at(step: int, base_lr: float, total_steps: int, warmup_steps: int = 0, schedule: str = "constant") -> float:
    """Learning rate for 0-based optimizer ``step``.

    Warm-up: ``lr·(step+1)/warmup`` for the first ``warmup`` steps.  After it, with progress
    ``p = (step − warmup) / max(1, total − warmup)``: constant ``lr``; cosine ``lr·½(1 + cos πp)``;
    linear ``lr·(1 − p)``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    p = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "linear":
        return base_lr * (1.0 - p)
    raise ValueError(f"unknown lr schedule {schedule!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
