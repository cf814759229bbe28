"""The flow-matching objective (pure functions), plus the hooks that reshape it.

Rectified flow, as Wan was trained and as the pipeline samples:
``x_t = (1 − σ)·x₀ + σ·ε`` and the model predicts the velocity ``v = ε − x₀``; loss = MSE in fp32.

Hooks (pure, so each is unit-testable and the loop only chooses which to call):
- ``differential_guidance_target``: ``target' = pred + s·(target − pred)`` with ``pred`` detached
  (ai-toolkit's "differential guidance": overshoots the target to learn edits faster).
- ``preservation_loss``: DOP — the LoRA-on prediction for the class-word prompt is pulled toward the
  LoRA-off prediction, × multiplier, and added to the loss.
"""

from __future__ import annotations

import torch


def _bcast(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``σ`` of shape [B] broadcast over a latent [B, C, T, H, W]."""
    return sigma.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x_t = (1 − σ)·x₀ + σ·ε`` per sample."""
    s = _bcast(sigma, x0)
    return (1.0 - s) * x0 + s * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the model must predict: ``ε − x₀``."""
    return noise - x0


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error computed in fp32 whatever the model's dtype."""
    return torch.mean((pred.float() - target.float()) ** 2)


def differential_guidance_target(pred: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """``pred.detach() + s·(target − pred.detach())``; s = 1 gives back ``target``."""
    p = pred.detach().float()
    return p + scale * (target.float() - p)


def preservation_loss(pred_lora: torch.Tensor, pred_base: torch.Tensor, multiplier: float) -> torch.Tensor:
    """DOP term: ``multiplier · MSE(pred_lora, pred_base.detach())`` (the base prediction is the anchor)."""
    return multiplier * mse_loss(pred_lora, pred_base.detach())
