"""The training loop in-process on the tiny model: learning, experts, checkpoints, flags, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from wanlora.engine.config import jobdir
from wanlora.engine.config.io import load_job
from wanlora.engine.model.lora_format import read_lora
from wanlora.engine.train.events import EventLog, Status
from wanlora.engine.train.loop import Trainer, run

from tests.engine.conftest import make_job_dir

CPU = torch.device("cpu")


def _events(job_dir: Path) -> list[dict]:
    return list(jobdir.read_events(job_dir))


def _steps(job_dir: Path) -> list[dict]:
    return [e for e in _events(job_dir) if e["type"] == "step"]


@pytest.mark.parametrize("expert", ["high_noise", "low_noise"])
def test_loss_falls_on_a_fixed_batch(tmp_path: Path, clips: Path, tiny_model: Path, expert: str) -> None:
    jd = make_job_dir(tmp_path, clips, tiny_model, multistage__high_noise=expert == "high_noise",
                      multistage__low_noise=expert == "low_noise", training__learning_rate=1e-2)
    tr = Trainer(load_job(jd / "job.toml"), jd, EventLog(jd), Status(jd), device=CPU)
    tr.setup()
    assert list(tr.parts.experts) == [expert]  # only the trained expert is loaded
    batch = tr.data.next_batch()
    assert batch.pixels.shape == (1, 3, 9, 64, 64) and batch.captions == ["sks a red square moving right"]
    ex = tr.experts[expert]

    def loss_once(train: bool) -> float:
        tr.gen_t.manual_seed(0)
        tr.gen_noise.manual_seed(1)
        if not train:
            with torch.no_grad():
                return tr.forward_loss(ex, batch)[0].item()
        loss, t = tr.forward_loss(ex, batch)
        assert (t >= 900).all() if expert == "high_noise" else (t < 900).all()
        loss.backward()
        ex.optimizer.step()
        ex.optimizer.zero_grad()
        return loss.item()

    before = loss_once(False)
    for _ in range(30):
        loss_once(True)
    after = loss_once(False)
    # the 2-layer tiny expert cannot memorise the target, but its LoRA alone removes a fifth of the error
    assert after < 0.8 * before, (before, after)


def test_only_the_trained_expert_trains_and_is_saved(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    jd = make_job_dir(tmp_path, clips, tiny_model, steps=6, multistage__low_noise=False)
    assert run(jd, device=CPU) == jobdir.EXIT_OK
    steps = _steps(jd)
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6]
    assert {s["expert"] for s in steps} == {"high_noise"}
    assert all(s["timestep"] >= 900 for s in steps)
    names = sorted(p.name for p in (jd / "checkpoints").iterdir())
    assert names == ["wanlora_demo_high_noise.safetensors", "wanlora_demo_high_noise_000003.safetensors"]


def test_both_experts_alternate_and_write_a_loadable_pair(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    from diffusers import WanImageToVideoPipeline

    jd = make_job_dir(tmp_path, clips, tiny_model, steps=12, multistage__switch_every=3,
                      save__every=2, save__max_keep=2)
    assert run(jd, device=CPU) == jobdir.EXIT_OK
    steps = _steps(jd)
    assert [s["expert"][0] for s in steps] == list("hhhlllhhhlll")
    for s in steps:
        assert (s["timestep"] >= 900) == (s["expert"] == "high_noise")
        for k in ("loss", "lr", "total_steps", "s_per_step", "eta_s", "seq", "ts", "v"):
            assert k in s
    out = jd / "checkpoints"
    names = sorted(p.name for p in out.iterdir())
    # max_keep=2 step files per expert (steps 8 and 10) + the final pair; no temp files
    assert names == [f"wanlora_demo_{e}{s}.safetensors" for e in ("high_noise", "low_noise")
                     for s in ("", "_000008", "_000010")]
    tensors, meta = read_lora(out / "wanlora_demo_low_noise.safetensors")
    assert meta["expert"] == "low_noise" and meta["step"] == "12" and meta["rank"] == "8"
    assert {v.dtype for k, v in tensors.items() if not k.endswith(".alpha")} == {torch.bfloat16}
    assert any(v.abs().max() > 0 for k, v in tensors.items() if "lora_B" in k)  # it learned something
    status = jobdir.read_status(jd)
    assert status["state"] == "completed" and status["step"] == 12 and status["pid"] > 0

    pipe = WanImageToVideoPipeline.from_pretrained(tiny_model)
    pipe.load_lora_weights(str(out / "wanlora_demo_high_noise.safetensors"))
    pipe.load_lora_weights(str(out / "wanlora_demo_low_noise.safetensors"), load_into_transformer_2=True)
    assert set(pipe.get_list_adapters()) == {"transformer", "transformer_2"}


def test_pause_flag_saves_then_exits_and_resume_finishes(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    jd = make_job_dir(tmp_path, clips, tiny_model, steps=8, save__every=100)
    jobdir.request_flag(jd, jobdir.FLAG_SAVE_NOW)
    jobdir.request_flag(jd, jobdir.FLAG_SAMPLE_NOW)
    jobdir.request_flag(jd, jobdir.FLAG_PAUSE)
    assert run(jd, device=CPU) == jobdir.EXIT_PAUSED
    assert jobdir.pending_flags(jd) == []
    assert jobdir.read_status(jd)["state"] == "paused"
    assert (jd / "state" / "step_000000" / "meta.json").is_file()
    assert any(e["type"] == "warning" and "sample_now" in e["message"] for e in _events(jd))
    assert run(jd, device=CPU) == jobdir.EXIT_OK
    assert [s["step"] for s in _steps(jd)] == list(range(1, 9))
    seqs = [e["seq"] for e in _events(jd)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # seq keeps increasing across restarts


def test_a_held_run_lock_refuses_a_second_trainer(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    from wanlora.engine.train.control import RunLock

    jd = make_job_dir(tmp_path, clips, tiny_model, steps=2)
    held = RunLock(jd)
    assert held.acquire()
    try:
        assert run(jd, device=CPU) == jobdir.EXIT_LOCKED
    finally:
        held.release()
    assert not (jd / "events.jsonl").exists()  # the refused trainer wrote nothing


def test_nan_loss_stops_with_exit_nan_and_names_the_last_checkpoint(
        tmp_path: Path, clips: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jd = make_job_dir(tmp_path, clips, tiny_model, steps=10, save__every=2)
    real = Trainer.forward_loss

    def poisoned(self, ex, batch):
        loss, t = real(self, ex, batch)
        return (loss * float("nan") if self.step >= 3 else loss), t

    monkeypatch.setattr(Trainer, "forward_loss", poisoned)
    assert run(jd, device=CPU) == jobdir.EXIT_NAN
    err = [e for e in _events(jd) if e["type"] == "error"][-1]
    assert err["reason"] == "nan" and "wanlora_demo_high_noise_000002" in err["message"]
    assert "step 4" in err["message"]
    st = jobdir.read_status(jd)
    assert st["state"] == "failed" and st["reason"] == "nan"


def test_missing_expert_weights_is_a_config_error(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    import shutil

    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_model, broken)
    shutil.rmtree(broken / "transformer_2")
    jd = make_job_dir(tmp_path, clips, broken, steps=2)
    assert run(jd, device=CPU) == jobdir.EXIT_CONFIG
    err = [e for e in _events(jd) if e["type"] == "error"][-1]
    assert err["reason"] == "config" and "transformer_2/" in err["message"]
    # training only the high-noise expert does not need transformer_2 at all
    jd2 = make_job_dir(tmp_path / "2", clips, broken, steps=2, multistage__low_noise=False)
    assert run(jd2, device=CPU) == jobdir.EXIT_OK


def test_unreadable_clip_is_a_warning_not_a_crash(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    import shutil

    from wanlora.engine.data.synthetic import write_bad_files

    folder = tmp_path / "clips"
    shutil.copytree(clips, folder)
    bad = write_bad_files(folder)
    jd = make_job_dir(tmp_path, folder, tiny_model, steps=10)
    assert run(jd, device=CPU) == jobdir.EXIT_OK
    warned = {e.get("path") for e in _events(jd) if e["type"] == "warning"}
    assert warned & {str(p) for p in bad}
    assert len(_steps(jd)) == 10


def test_adamw8bit_on_cpu_is_a_clear_config_error(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    jd = make_job_dir(tmp_path, clips, tiny_model, steps=2, training__optimizer="adamw8bit")
    assert run(jd, device=CPU) == jobdir.EXIT_CONFIG
    err = [e for e in _events(jd) if e["type"] == "error"][-1]
    assert "CUDA" in err["message"] and "adamw" in err["message"]
    assert json.loads((jd / "status.json").read_text())["reason"] == "config"


def test_quantised_base_on_cpu_is_a_clear_config_error(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    jd = make_job_dir(tmp_path, clips, tiny_model, steps=2, quantization__transformer="nf4")
    assert run(jd, device=CPU) == jobdir.EXIT_CONFIG
    err = [e for e in _events(jd) if e["type"] == "error"][-1]
    assert "quantization.transformer" in err["message"] and "none" in err["message"]
