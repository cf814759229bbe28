"""Text-embedding cache: the stored embedding is the pipeline's own, smaller on disk, and serves without an encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from wanlora.engine.cache.prepare import job_prompts
from wanlora.engine.cache.text import Embedder, TextCache, real_lengths
from wanlora.engine.model.text import encode_prompts

pytestmark = pytest.mark.usefixtures("_home")  # a private WANLORA_HOME, offline (tests/engine/conftest.py)

CPU = torch.device("cpu")
PROMPTS = ["sks a red square moving right", "", "person a red square moving right"]


@pytest.fixture(scope="module")
def text(tiny_model: Path):
    from wanlora.engine.model.folder import load_text_encoder

    return load_text_encoder(tiny_model, torch.float32, "cpu")


def test_cached_embeddings_equal_the_live_ones_and_store_only_real_rows(tmp_path: Path, text) -> None:
    tok, te = text
    cache = TextCache(tmp_path, "te-1")
    emb = Embedder(tok, te, device=CPU, dtype=torch.float32)
    assert emb.load({cache: set(PROMPTS)}) == (3, 3)
    emb.drop_encoder()
    assert not emb.resident
    live = encode_prompts(tok, te, PROMPTS, device=CPU, dtype=torch.float32)
    got = emb(PROMPTS)
    assert got.shape == (3, 512, 32)
    torch.testing.assert_close(got, live, rtol=1e-5, atol=1e-6)
    n = real_lengths(tok, PROMPTS)
    assert n == [7, 1, 7]  # six words + EOS; the empty prompt is its EOS row alone
    assert bool((got[0, 7:] == 0).all()) and bool((got[0, :7].abs().sum(-1) > 0).all())
    for p, k in zip(PROMPTS, n, strict=True):
        assert cache.get(p).shape == (k, 32)  # 512-row padding is not stored

    again = Embedder(tok, None, device=CPU, dtype=torch.float32)  # a later job, no encoder loaded at all
    assert again.load({TextCache(tmp_path, "te-1"): set(PROMPTS)}) == (3, 0)
    torch.testing.assert_close(again(PROMPTS[::-1]), live.flip(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="not in the text-embedding cache"):
        again(["an unseen prompt"])


def test_key_is_encoder_prompt_and_length(tmp_path: Path) -> None:
    a = TextCache(tmp_path, "te-1")
    assert a.key("x") == TextCache(tmp_path, "te-1").key("x")
    assert len({a.key("x"), a.key("y"), TextCache(tmp_path, "te-2").key("x"),
                TextCache(tmp_path, "te-1", max_length=226).key("x")}) == 4


def test_unload_text_encoder_trains_every_caption_as_the_trigger(tmp_path: Path, text) -> None:
    tok, te = text
    emb = Embedder(tok, te, device=CPU, dtype=torch.float32)
    emb.fixed = "sks"
    emb.load({TextCache(tmp_path, "te-1"): {"sks", ""}})
    emb.drop_encoder()
    out = emb(["sks a red square", "a blue circle", ""])
    trig = encode_prompts(tok, te, ["sks", ""], device=CPU, dtype=torch.float32)
    torch.testing.assert_close(out[0], trig[0])
    torch.testing.assert_close(out[1], trig[0])
    torch.testing.assert_close(out[2], trig[1])  # caption dropout still trains the empty prompt


def test_job_prompts_cover_dropout_dop_and_previews(tmp_path: Path) -> None:
    from wanlora.engine.config.schema import Job
    from wanlora.engine.data.dataset import build_dataset
    from wanlora.engine.data.synthetic import write_clips

    write_clips(tmp_path / "c", n=2, num_frames=12, caption="[trigger] a red square moving right")
    job = Job.model_validate({
        "job": {"trigger_word": "sks"},
        "training": {"cache_text_embeddings": True, "dop": {"enabled": True, "preservation_class": "person"}},
        "datasets": [{"folder": str(tmp_path / "c"), "resolutions": [64], "num_frames": 9}],
        "sample": {"negative_prompt": "blurry", "prompts": [{"prompt": "[trigger] orbit", "ctrl_img": "x.png"}]},
    })
    assert job_prompts(job, build_dataset(job)) == {0: {
        "", "sks a red square moving right", "person a red square moving right", "sks orbit", "blurry"}}
