"""The trainer with the guide's recipe features on the tiny model: caches, DOP, EMA, regularization, previews."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from wanlora.engine.config import jobdir
from wanlora.engine.config.io import load_job
from wanlora.engine.train.demo import demo_job_dict, write_job_dir
from wanlora.engine.train.events import EventLog, Status
from wanlora.engine.train.loop import Trainer, run

pytestmark = pytest.mark.usefixtures("_home")  # a private WANLORA_HOME, offline (tests/engine/conftest.py)

CPU = torch.device("cpu")


def job_dir(tmp: Path, name: str, clips: Path, model: Path, ds: dict | None = None, sample: dict | None = None,
            **over) -> Path:
    d = demo_job_dict(clips, model, **over)
    d["datasets"][0].update(ds or {})
    if sample:
        d["sample"] = sample
    return write_job_dir(tmp / name, d)


def events(jd: Path, kind: str) -> list[dict]:
    return [e for e in jobdir.read_events(jd) if e["type"] == kind]


def train(jd: Path) -> Trainer:
    tr = Trainer(load_job(jd / "job.toml"), jd, EventLog(jd), Status(jd), device=CPU)
    tr.setup()
    assert tr.train() == jobdir.EXIT_OK
    tr.events.close()
    return tr


@pytest.fixture(scope="module")
def dop_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wanlora.engine.data.synthetic import write_clips

    folder = tmp_path_factory.mktemp("dopclips")
    write_clips(folder, n=3, num_frames=24, size=(64, 64), caption="[trigger] a red square moving right")
    return folder


def test_cached_latents_and_text_train_exactly_like_live_with_dropout_and_dop(
        tmp_path: Path, dop_clips: Path, tiny_model: Path) -> None:
    common = dict(steps=4, multistage__switch_every=2, job__trigger_word="sks",
                  training__dop={"enabled": True, "multiplier": 1.0, "preservation_class": "person"})
    live = job_dir(tmp_path, "live", dop_clips, tiny_model, {"caption_dropout": 0.5, "cache_latents": False},
                   training__cache_text_embeddings=False, **common)  # caching is the default: turned off here
    cached = job_dir(tmp_path, "cached", dop_clips, tiny_model, {"caption_dropout": 0.5, "cache_latents": True},
                     training__cache_text_embeddings=True, **common)
    train(live)
    tr = Trainer(load_job(cached / "job.toml"), cached, EventLog(cached), Status(cached), device=CPU)
    tr.setup()
    assert tr.parts.text_encoder is None and tr.parts.vae is None  # both freed: everything is cached
    assert tr.train() == jobdir.EXIT_OK
    tr.events.close()

    a, b = events(live, "step"), events(cached, "step")
    assert [s["expert"] for s in b] == ["high_noise"] * 2 + ["low_noise"] * 2
    np.testing.assert_allclose([s["loss"] for s in b], [s["loss"] for s in a], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([s["dop_loss"] for s in b], [s["dop_loss"] for s in a], rtol=1e-4, atol=1e-8)
    dop = [s["dop_loss"] for s in b]
    assert dop[0] == 0.0 and dop[1] > 0  # a fresh LoRA equals the base; once trained, the term is measurable
    assert tr.inputs.embed.live_calls == 0 and tr.inputs.latents.misses == 0
    prog = events(cached, "cache")
    lat = [e for e in prog if e["what"] == "latents"]
    assert lat[-1]["total"] == 3 and lat[-1]["computed"] == 3
    assert all(e["done"] <= e["total"] for e in prog)
    txt = [e for e in prog if e["what"] == "text"][-1]
    assert txt["total"] == 3 and txt["computed"] == 3  # caption, the empty prompt, the class prompt

    again = job_dir(tmp_path, "again", dop_clips, tiny_model, {"caption_dropout": 0.5, "cache_latents": True},
                    training__cache_text_embeddings=True, **{**common, "steps": 1})
    Trainer(load_job(again / "job.toml"), again, EventLog(again), Status(again), device=CPU).setup()
    summary = {e["what"]: e for e in events(again, "cache") if "reused" in e}
    assert summary["latents"]["computed"] == 0 and summary["latents"]["reused"] == 3
    assert summary["text"]["computed"] == 0


def test_ema_files_hold_the_shadow_and_resume_keeps_it(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    from wanlora.engine.model.lora_format import comfy_to_peft, read_lora
    from wanlora.engine.train.state import latest_state, load_state

    jd = job_dir(tmp_path, "ema", clips, tiny_model, steps=3, multistage__low_noise=False,
                 training__ema=True, training__ema_decay=0.5, save__every=3)
    assert run(jd, device=CPU) == jobdir.EXIT_OK
    st = load_state(latest_state(jd))
    shadow, live = st["adapters"]["high_noise@ema"], st["adapters"]["high_noise"]
    tensors, meta = read_lora(jd / "checkpoints" / "wanlora_demo_high_noise.safetensors")
    weights, _alphas = comfy_to_peft(tensors)
    assert meta["weights"] == "ema" and meta["ema_decay"] == "0.5"
    key = next(k for k in weights if "lora_B" in k)
    torch.testing.assert_close(weights[key].float(), shadow[key].to(torch.bfloat16).float())
    assert not torch.allclose(shadow[key], live[key])  # the average lags behind the live weights
    assert not any("ema" in e.get("message", "") for e in events(jd, "warning"))


def test_regularization_samples_train_with_their_own_captions_and_are_counted(
        tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    from wanlora.engine.data.dataset import build_dataset
    from wanlora.engine.data.synthetic import write_clips

    reg = tmp_path / "reg"
    write_clips(reg, n=2, num_frames=24, size=(64, 64), prefix="reg", caption="a blue square")
    d = demo_job_dict(clips, tiny_model, steps=6, multistage__low_noise=False, job__trigger_word="sks")
    d["datasets"].append({"folder": str(reg), "resolutions": [64], "num_frames": 9, "caption_dropout": 0.0,
                          "is_regularization": True, "weight": 0.5})
    jd = write_job_dir(tmp_path / "job", d)
    job = load_job(jd / "job.toml")
    data = build_dataset(job)
    batches = [data.next_batch() for _ in range(6)]
    expected = [sum(b.is_regularization) for b in batches]
    for b in batches:
        for s in b.samples:
            assert s.caption == ("a blue square" if s.is_regularization else "sks a red square moving right")
    assert run(jd, device=CPU) == jobdir.EXIT_OK
    assert [s["reg_samples"] for s in events(jd, "step")] == expected
    assert sum(expected) == 2  # 4 clips at weight 1 + 2 at weight 0.5 → one regularization clip per 5 samples


def test_previews_at_sample_every_and_on_sample_now_then_wanlora_sample(
        tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    import decord
    from PIL import Image
    from wanlora.tui.cli import main

    img = tmp_path / "ctrl.png"
    Image.fromarray((np.random.default_rng(0).random((70, 90, 3)) * 255).astype("uint8")).save(img)
    jd = job_dir(tmp_path, "prev", clips, tiny_model, steps=2, multistage__switch_every=1, save__every=2,
                 sample={"enabled": True, "every": 2, "width": 64, "height": 48, "num_frames": 9, "steps": 2,
                         "prompts": [{"prompt": "a red square", "ctrl_img": str(img)}]})
    jobdir.request_flag(jd, jobdir.FLAG_SAMPLE_NOW)
    tr = Trainer(load_job(jd / "job.toml"), jd, EventLog(jd), Status(jd), device=CPU)
    tr.setup()
    assert tr.train() == jobdir.EXIT_OK
    assert all(ex.model.training for ex in tr.experts.values())  # back in train mode after previews
    samples = events(jd, "sample")
    assert [(e["step"], Path(e["path"]).name) for e in samples] == [(0, "000000_0.mp4"), (2, "000002_0.mp4")]
    for e in samples:
        vr = decord.VideoReader(e["path"])
        assert len(vr) == 9 and vr[0].shape == (48, 64, 3)  # plays, with the right frame count and size
        assert Path(e["png"]).is_file() and Image.open(e["png"]).size == (64, 48)
    first, last = (decord.VideoReader(e["path"])[4].asnumpy().astype(int) for e in samples)
    assert np.abs(first - last).mean() > 0.5  # the trained LoRAs change the preview

    ck = jd / "checkpoints"
    out = tmp_path / "eval"
    code = main(["sample", str(ck / "wanlora_demo_high_noise.safetensors"),
                 str(ck / "wanlora_demo_low_noise.safetensors"), "--image", str(img), "--prompt", "a red square",
                 "--model", str(tiny_model), "--frames", "5", "--steps", "2", "--width", "32", "--height", "32",
                 "--out", str(out), "--cpu"])
    assert code == 0
    vr = decord.VideoReader(str(out / "000002_0.mp4"))
    assert len(vr) == 5 and vr[0].shape == (32, 32, 3)


def test_wanlora_cache_command_precomputes_then_reuses(tmp_path: Path, clips: Path, tiny_model: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    import shutil

    from wanlora.tui.cli import main

    mine = tmp_path / "clips"
    shutil.copytree(clips, mine, ignore=shutil.ignore_patterns(".wanlora_cache"))  # other tests' caches stay there
    jd = job_dir(tmp_path, "cmd", mine, tiny_model, {"cache_latents": True}, training__cache_text_embeddings=True)
    assert main(["cache", str(jd / "job.toml")]) == 0
    out = capsys.readouterr().out
    assert "latents  4/4  (4 computed, 0 reused)" in out and "text" in out
    assert str(mine / ".wanlora_cache") in out
    assert main(["cache", str(jd)]) == 0
    assert "latents  4/4  (0 computed, 4 reused)" in capsys.readouterr().out
