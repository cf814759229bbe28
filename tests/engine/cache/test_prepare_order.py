"""Caching frees the text encoder before the VAE encodes any clip: on a 12 GB card the fp8 UMT5-XXL (~6.5 GiB),
the VAE and its activations together reach the card's size, so the two never share the GPU while caching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.conftest import make_job_dir

pytestmark = pytest.mark.usefixtures("_home")


def test_the_text_encoder_is_gone_before_the_first_clip_is_encoded(tmp_path: Path, clips: Path,
                                                                   tiny_model: Path) -> None:
    from wanlora.engine.cache.prepare import prepare_inputs
    from wanlora.engine.config.io import load_job
    from wanlora.engine.data.dataset import build_dataset
    from wanlora.engine.model.load import load_parts

    job = load_job(make_job_dir(tmp_path, clips, tiny_model) / "job.toml")
    assert job.datasets[0].cache_latents and job.training.cache_text_embeddings  # the recipes' default
    parts = load_parts(str(tiny_model), [], dtype=torch.float32, device="cpu", vae_dtype=torch.float32)
    encoder_at_encode: list[bool] = []
    encode = parts.vae.encode

    def spy(*a, **k):
        encoder_at_encode.append(parts.text_encoder is not None)
        return encode(*a, **k)

    parts.vae.encode = spy
    dataset = build_dataset(job)
    try:
        inputs = prepare_inputs(job, parts, dataset, device=torch.device("cpu"), dtype=torch.float32,
                                fallback_root=tmp_path / "cache", only_root=True)
    finally:
        dataset.close()
    assert encoder_at_encode and not any(encoder_at_encode)  # every clip encoded with the text encoder gone
    assert inputs.text_encoder_freed and inputs.vae_freed and inputs.text_total > 0
    assert inputs.latent_stats is not None and inputs.latent_stats.computed == len(dataset)
