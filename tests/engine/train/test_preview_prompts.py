"""Previews follow their own prompts and negatives, also under ``unload_text_encoder``, and the default negative
is Wan's own (the Wan 2.2 release's ``sample_neg_prompt``); ``sample.negative_prompt = ""`` turns it off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from wanlora.engine.config.io import job_from_dict, load_job
from wanlora.engine.config.schema import WAN_NEGATIVE_PROMPT
from wanlora.engine.train.demo import demo_job_dict, write_job_dir

pytestmark = pytest.mark.usefixtures("_home")  # a private WANLORA_HOME, offline (tests/engine/conftest.py)

CPU = torch.device("cpu")
PROMPTS = ("[trigger] a red square drifting left", "a blue circle spinning")


def _job(tmp: Path, clips: Path, model: Path, **sample) -> dict:
    from PIL import Image

    img = tmp / "first.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(img)
    d = demo_job_dict(clips, model, steps=2)
    d["training"].update(unload_text_encoder=True)
    d["sample"] = {"width": 64, "height": 64, "num_frames": 5, "steps": 1,
                   "prompts": [{"prompt": PROMPTS[0], "ctrl_img": str(img)},
                               {"prompt": PROMPTS[1], "ctrl_img": str(img), "neg": "static, blurry"}], **sample}
    return d


def test_previews_under_unload_text_encoder_embed_their_own_prompts_and_negatives(
        tmp_path: Path, clips: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wanlora.engine.model.folder import load_text_encoder
    from wanlora.engine.model.text import encode_prompts
    from wanlora.engine.train import previews
    from wanlora.engine.train.events import EventLog, Status
    from wanlora.engine.train.loop import Trainer

    jd = write_job_dir(tmp_path / "job", _job(tmp_path, clips, tiny_model))
    tr = Trainer(load_job(jd / "job.toml"), jd, EventLog(jd), Status(jd), device=CPU)
    tr.setup()
    assert tr.parts.text_encoder is None  # unloaded: previews can only use what was encoded before

    seen: list[tuple[str, str, torch.Tensor, torch.Tensor]] = []

    def fake_render(pipe, specs, out_dir, step, *, embed=None, **_kw):  # what the pipeline would be given
        for s in specs:
            seen.append((s.prompt, s.negative, embed([s.prompt]), embed([s.negative])))
        return []

    monkeypatch.setattr(previews, "render", fake_render)
    tr.sample_previews()

    tok, te = load_text_encoder(tiny_model, torch.float32, CPU)  # the reference: a fresh live encoder
    trig = tr.job.job.trigger_word

    def live(text: str) -> torch.Tensor:
        return encode_prompts(tok, te, [text], device=CPU, dtype=torch.float32)

    want = [(PROMPTS[0].replace("[trigger]", trig), WAN_NEGATIVE_PROMPT), (PROMPTS[1], "static, blurry")]
    assert [(p, n) for p, n, _c, _u in seen] == want
    # cached rows padded back to 512 are the live embedding (float32 both ways; tolerance for the kernels)
    for (p, n, cond, uncond) in seen:
        torch.testing.assert_close(cond, live(p), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(uncond, live(n), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(cond, uncond)  # CFG has two sides
        assert not torch.allclose(cond, live(trig))  # not the bare trigger
    # training itself still embeds every non-empty caption as the trigger (the guide's unload_text_encoder)
    torch.testing.assert_close(tr.embed(["a caption the run never encoded"]), live(trig), rtol=1e-5, atol=1e-6)
    tr.data.close()


def test_the_default_negative_is_wans_own_and_empty_turns_it_off(tmp_path: Path, clips: Path,
                                                                   tiny_model: Path) -> None:
    from wanlora.engine.cache.prepare import sample_prompts
    from wanlora.engine.train.previews import preview_specs

    # the Wan 2.2 release's wan/configs/shared_config.py sample_neg_prompt: its first and last phrases, its length
    assert WAN_NEGATIVE_PROMPT.startswith("色调艳丽，过曝，静态，") and WAN_NEGATIVE_PROMPT.endswith("背景人很多，倒着走")
    assert len(WAN_NEGATIVE_PROMPT) == 137 and WAN_NEGATIVE_PROMPT.count("，") == 27
    job = job_from_dict(_job(tmp_path, clips, tiny_model))
    assert [s.negative for s in preview_specs(job.sample, "sks")] == [WAN_NEGATIVE_PROMPT, "static, blurry"]
    assert WAN_NEGATIVE_PROMPT in sample_prompts(job)  # encoded (and cached) before the encoder goes
    off = job_from_dict(_job(tmp_path, clips, tiny_model, negative_prompt=""))
    assert [s.negative for s in preview_specs(off.sample, "sks")] == ["", "static, blurry"]  # per-prompt neg wins
