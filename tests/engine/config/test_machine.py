"""Issue #14 points 5 and 10: `validate` (and so the daemon's intake) says when *this* machine cannot run
a job, and its messages say a fix that changes something; one typo does not hide every other finding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wanlora.engine.checks.validate import check_file
from wanlora.engine.config.machine import Machine

from tests.engine.conftest import clean_job

CPU = Machine(cuda=False, bitsandbytes=False)
GPU_NO_BNB = Machine(cuda=True, bitsandbytes=False, gpu_names=("NVIDIA H100",))
GPU = Machine(cuda=True, bitsandbytes=True, gpu_names=("NVIDIA H100",))


def errors(path: Path, machine: Machine | bool | None) -> dict[str, str]:
    _, findings = check_file(path, machine=machine)
    return {f.key: f"{f.message} Fix: {f.fix}" for f in findings if f.level == "error"}


def test_fp8_on_a_machine_without_cuda_is_refused_with_the_fix(job_file, ten_clips):
    p = job_file(clean_job(ten_clips))  # the 80 GB tier: fp8 transformer
    errs = errors(p, CPU)
    assert "needs a CUDA GPU" in errs["quantization.transformer"]
    assert 'quantization.transformer = "none"' in errs["quantization.transformer"]
    assert errors(p, GPU) == {}


def test_nf4_and_adamw8bit_need_bitsandbytes(job_file, ten_clips):
    p = job_file(clean_job(ten_clips, extra="").replace("vram_tier = 80", "vram_tier = 80")
                 + '[quantization]\ntransformer = "nf4"\n[training]\noptimizer = "adamw8bit"\n')
    errs = errors(p, GPU_NO_BNB)
    assert "bitsandbytes" in errs["quantization.transformer"]
    assert "bitsandbytes" in errs["training.optimizer"] and 'optimizer = "adamw"' in errs["training.optimizer"]
    assert errors(p, GPU) == {}
    assert errors(p, False) == {}  # --anywhere


def test_validate_cli_flags_this_machine_and_anywhere_skips(job_file, ten_clips, monkeypatch, capsys):
    import wanlora.engine.config.machine as machine
    from wanlora.tui.cli import main

    monkeypatch.delenv("WANLORA_VALIDATE_ANYWHERE", raising=False)
    monkeypatch.setattr(machine, "this_machine", lambda: CPU)
    p = job_file(clean_job(ten_clips) + '[training]\noptimizer = "adamw8bit"\n')
    assert main(["validate", str(p), "--json"]) == 1
    keys = {f["key"] for f in json.loads(capsys.readouterr().out)["findings"] if f["level"] == "error"}
    assert keys == {"quantization.transformer", "training.optimizer"}
    assert main(["validate", str(p), "--anywhere"]) == 0


def test_switch_every_fix_is_a_different_value(job_file, ten_clips):
    p = job_file(clean_job(ten_clips) + "[training]\nsteps = 10\n[multistage]\nswitch_every = 10\n")
    _, findings = check_file(p, machine=False)
    f = next(f for f in findings if f.key == "multistage.switch_every")
    assert "use switch_every = 5" in f.fix and "use switch_every = 10" not in f.fix


def test_warmup_not_below_steps_is_flagged(job_file, ten_clips):
    p = job_file(clean_job(ten_clips) + "[training]\nsteps = 100\nlr_warmup_steps = 100\n")
    _, findings = check_file(p, machine=False)
    f = next(f for f in findings if f.key == "training.lr_warmup_steps")
    assert f.level == "warning" and "never reaches" in f.message and "lr_warmup_steps = 10" in f.fix


@pytest.mark.parametrize("typo", ['rank = "sixteen"', "rnak = 16"])
def test_a_type_error_or_unknown_key_does_not_hide_other_findings(job_file, ten_clips, typo):
    text = clean_job(ten_clips).replace("num_frames = 21", "num_frames = 40") + f"[target]\n{typo}\n"
    resolved, findings = check_file(job_file(text), machine=False)
    keys = {f.key for f in findings if f.level == "error"}
    assert resolved is None
    assert keys >= {"datasets[0].num_frames"} and any(k.startswith("target.") for k in keys)
