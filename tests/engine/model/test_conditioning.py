"""The training condition equals the one the inference pipeline builds, channel for channel."""

from __future__ import annotations

import torch
from wanlora.engine.model.conditioning import condition_latents, encode_latents, first_frame_mask, model_input
from wanlora.engine.train.objective import (
    differential_guidance_target,
    flow_target,
    mse_loss,
    noisy_latents,
    preservation_loss,
)


def test_condition_matches_the_pipelines_prepare_latents(tiny_pipe) -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 32, 48, generator=g) * 2 - 1  # pixels in [-1, 1], as the video processor gives
    ours = condition_latents(tiny_pipe.vae, image, num_frames=9)
    _lat, ref = tiny_pipe.prepare_latents(image, 1, 16, 32, 48, 9, torch.float32, torch.device("cpu"),
                                          torch.Generator().manual_seed(1))
    assert ours.shape == ref.shape == (1, 20, 3, 4, 6)
    assert torch.equal(ours[:, :4], ref[:, :4])  # mask
    assert torch.allclose(ours, ref, atol=1e-6)
    # the condition is not the zero-latent shortcut: frames after the first are the VAE's black frames
    assert ours[:, 4:, 1:].abs().max() > 1e-3


def test_mask_marks_latent_frame_zero_only() -> None:
    m = first_frame_mask(2, 9, 4, 4)
    assert m.shape == (2, 4, 3, 4, 4)
    assert m[:, :, 0].eq(1).all() and m[:, :, 1:].eq(0).all()


def test_target_latents_are_normalised_like_the_pipeline(tiny_pipe) -> None:
    vae = tiny_pipe.vae
    video = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    z = vae.encode(video).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    assert torch.allclose(encode_latents(vae, video), (z - mean) / std, atol=1e-6)
    x = model_input(torch.zeros(1, 16, 3, 4, 4), torch.ones(1, 20, 3, 4, 4), torch.float32)
    assert x.shape[1] == 36 and x[:, :16].eq(0).all() and x[:, 16:].eq(1).all()


def test_flow_matching_objective() -> None:
    x0, eps = torch.full((2, 1, 1, 1, 1), 2.0), torch.full((2, 1, 1, 1, 1), -1.0)
    xt = noisy_latents(x0, eps, torch.tensor([0.0, 1.0]))
    assert xt[0].item() == 2.0 and xt[1].item() == -1.0  # σ=0 is data, σ=1 is noise
    assert noisy_latents(x0, eps, torch.tensor([0.25, 0.25]))[0].item() == 0.75 * 2 - 0.25
    assert flow_target(x0, eps)[0].item() == -3.0
    pred = torch.zeros(2, 1, 1, 1, 1, dtype=torch.bfloat16, requires_grad=True)
    loss = mse_loss(pred, flow_target(x0, eps))
    assert loss.dtype == torch.float32 and loss.item() == 9.0
    dg = differential_guidance_target(pred, flow_target(x0, eps), 3.0)
    assert dg.requires_grad is False and dg[0].item() == -9.0
    assert torch.equal(differential_guidance_target(pred, flow_target(x0, eps), 1.0), flow_target(x0, eps))
    base = torch.ones(2, 1, 1, 1, 1, requires_grad=True)
    pl = preservation_loss(pred.float(), base, 2.0)
    pl.backward()
    assert pl.item() == 2.0 and base.grad is None
