"""The I2V condition, exactly as ``WanImageToVideoPipeline.prepare_latents`` builds it at inference.

A LoRA only works at inference if training fed the expert the same 36 channels the pipeline will:
``[noisy latents (16) | mask (4) | condition latents (16)]``.  The condition is the first frame followed
by F−1 *black pixel frames*, VAE-encoded together with ``.mode()`` (not zero latents), normalised with
the VAE's ``latents_mean`` / ``latents_std``; the mask is 1 on latent frame 0 in all four channels.
Target latents are normalised the same way.  Latent caching can store the outputs of these functions.
"""

from __future__ import annotations

import torch


def latent_stats(vae, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's per-channel ``latents_mean`` and ``latents_std`` shaped ``[1, C, 1, 1, 1]``."""
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, dtype=dtype, device=device).view(1, z, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=dtype, device=device).view(1, z, 1, 1, 1)
    return mean, std


def normalize_latents(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(z − mean) / std``, written as the pipeline writes it (``× 1/std``) so values match bit for bit."""
    return (z - mean) * (1.0 / std)


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor) -> torch.Tensor:
    """Normalised fp32 latents ``[B,16,T,h,w]`` of pixel video ``[B,3,F,H,W]`` in [-1, 1] (``.mode()``).

    ``.mode()`` (the posterior mean) keeps targets deterministic and cacheable; T = (F−1)//4 + 1.
    """
    vae_dtype = next(vae.parameters()).dtype
    vae_device = next(vae.parameters()).device
    z = vae.encode(pixels.to(vae_device, vae_dtype)).latent_dist.mode().float()
    mean, std = latent_stats(vae, z.device)
    return normalize_latents(z, mean, std)


def first_frame_mask(batch: int, num_frames: int, lat_h: int, lat_w: int, temporal: int = 4) -> torch.Tensor:
    """``[B, 4, T, h, w]`` mask: 1 on latent frame 0 (pixel frame 0 repeated ×4), 0 elsewhere."""
    t_lat = (num_frames - 1) // temporal + 1
    mask = torch.zeros(batch, temporal, t_lat, lat_h, lat_w)
    mask[:, :, 0] = 1.0
    return mask


@torch.no_grad()
def condition_latents(vae, first_frame: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The 20-channel I2V condition ``[B, 4+16, T, h, w]`` (fp32) for ``first_frame`` ``[B,3,H,W]`` in [-1, 1]."""
    b, c, h, w = first_frame.shape
    video = torch.cat([first_frame[:, :, None], first_frame.new_zeros(b, c, num_frames - 1, h, w)], dim=2)
    lat = encode_latents(vae, video)
    temporal = int(getattr(vae.config, "scale_factor_temporal", 4) or 4)
    mask = first_frame_mask(b, num_frames, lat.shape[-2], lat.shape[-1], temporal).to(lat.device, lat.dtype)
    return torch.cat([mask, lat], dim=1)


def model_input(noisy: torch.Tensor, condition: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The expert's 36-channel input: noisy latents then the condition, cast to the transformer's dtype."""
    return torch.cat([noisy, condition.to(noisy.dtype)], dim=1).to(dtype)
