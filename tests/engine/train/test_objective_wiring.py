"""One training step's loss recomputed by hand, next to ``Trainer.forward_loss`` on the same fixed batch.

The maths is written out here from the definition (rectified flow as Wan trains and samples it), not taken
from ``engine.train.objective``:  σ = t / 1000 with t on the 0–1000 scale the transformer's timestep
embedding expects, x_t = (1 − σ)·x₀ + σ·ε, the target is the velocity ε − x₀, and the expert sees 36 input
channels: x_t (16) | first-frame mask (4) | VAE latents of [first frame, black frames] (16), all latents
normalised with the VAE's latents_mean / latents_std.  Only the random draws (which t and ε a sample gets)
come from the trainer's own keyed generator, so the two computations see the same noise.

Wiring mistakes this catches (each was applied to ``engine/train/loop.py`` by hand and made this test fail):
the timestep passed as t/1000; x₀ and ε swapped in x_t; the target's sign flipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from wanlora.engine.config.io import load_job
from wanlora.engine.train.events import EventLog, Status
from wanlora.engine.train.loop import Trainer
from wanlora.engine.train.sample_noise import draw_per_sample

from tests.engine.conftest import make_job_dir

CPU = torch.device("cpu")


def _normalised_latents(vae, video: torch.Tensor) -> torch.Tensor:
    """VAE posterior mean of ``video`` [B,3,F,H,W], then (z − mean)/std per channel (the pipeline's normalisation)."""
    z = vae.encode(video).latent_dist.mode().float()
    c = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, c, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, c, 1, 1, 1)
    return (z - mean) / std


@pytest.mark.parametrize("expert", ["high_noise", "low_noise"])
def test_forward_loss_equals_the_flow_matching_loss_computed_by_hand(tmp_path: Path, clips: Path, tiny_model: Path,
                                                                   expert: str) -> None:
    jd = make_job_dir(tmp_path, clips, tiny_model, steps=4, multistage__high_noise=expert == "high_noise",
                      multistage__low_noise=expert == "low_noise")
    tr = Trainer(load_job(jd / "job.toml"), jd, EventLog(jd), Status(jd), device=CPU)
    tr.setup()
    ex = tr.experts[expert]
    with torch.no_grad():  # give the LoRA non-zero weights so its B matrices are not all zero
        for p in ex.params:
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    batch = tr.data.next_batch()
    seen: dict[str, torch.Tensor] = {}

    def spy(_module, args, kwargs) -> None:
        seen["input"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        seen["timestep"] = kwargs["timestep"].detach().clone()

    handle = ex.model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        with torch.no_grad():
            loss, t_used = tr.forward_loss(ex, batch)
    finally:
        handle.remove()

    # -------- the same step, from the definitions --------
    vae = tr.parts.fresh_vae(torch.float32, CPU)  # the same VAE weights (the trainer freed its own after caching)
    pixels = batch.pixels.float()                              # [B, 3, F, H, W] in [-1, 1]
    b, _, f, h, w = pixels.shape
    with torch.no_grad():
        x0 = _normalised_latents(vae, pixels)                  # [B, 16, T, h', w']
        first = pixels[:, :, :1]
        cond_video = torch.cat([first, torch.zeros(b, 3, f - 1, h, w)], dim=2)
        cond = _normalised_latents(vae, cond_video)
    lat_t, lat_h, lat_w = x0.shape[2:]
    mask = torch.zeros(b, 4, lat_t, lat_h, lat_w)
    mask[:, :, 0] = 1.0                                        # the given first frame, 4 channels (VAE's ×4 in time)
    positions = [s.position for s in batch.samples]
    t, eps = draw_per_sample(positions, tr.job.training.seed, x0.shape[1:], expert=expert,
                             boundary_ratio=0.9, kind="linear", bias="balanced", device=CPU)
    # the 0-1000 scale, inside the expert's own range (I2V A14B boundary 0.9)
    assert ((t >= 900) & (t <= 1000)).all() if expert == "high_noise" else ((t >= 1) & (t < 900)).all()
    sigma = (t / 1000.0).view(-1, 1, 1, 1, 1)
    xt = (1.0 - sigma) * x0 + sigma * eps
    inp = torch.cat([xt, mask, cond], dim=1)
    assert inp.shape[1] == 36 == tr.parts.experts[expert].config.in_channels
    emb = tr.embed(batch.captions)
    with torch.no_grad():
        pred = ex.model(inp, timestep=t, encoder_hidden_states=emb, return_dict=False)[0].float()
    target = eps - x0
    expected = ((pred - target) ** 2).mean()

    # what the expert was fed, then the loss
    assert torch.equal(t_used.cpu(), t)
    assert torch.allclose(seen["timestep"].float(), t), (seen["timestep"], t)
    assert seen["input"].shape == inp.shape
    assert torch.allclose(seen["input"].float(), inp, atol=1e-5), (seen["input"].float() - inp).abs().max()
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-7), (loss.item(), expected.item())
    # a wrong objective would be visibly different, not within rounding: the three mutations, by hand
    with torch.no_grad():
        wrong = {"t/1000": ex.model(inp, timestep=t / 1000, encoder_hidden_states=emb, return_dict=False)[0].float()}
        swapped = torch.cat([(1.0 - sigma) * eps + sigma * x0, mask, cond], dim=1)
        wrong["x0/noise swapped"] = ex.model(swapped, timestep=t, encoder_hidden_states=emb, return_dict=False)[0].float()
    for name, p in wrong.items():
        assert abs(((p - target) ** 2).mean().item() - expected.item()) > 1e-3 * expected.item(), name
    assert abs(((pred + target) ** 2).mean().item() - expected.item()) > 1e-3 * expected.item(), "target sign"
