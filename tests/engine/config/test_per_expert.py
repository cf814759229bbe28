"""Per-expert settings: ``[multistage.high_noise]`` / ``[multistage.low_noise]`` tables over the job-wide values.

What a user notices: the file says it once, ``wanlora show`` / the wizard say where each expert's value comes
from, and the run really trains each expert with its own learning rate and rank — visible in
``events.jsonl`` and in each LoRA file's metadata and tensor shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from wanlora.engine.checks.validate import validate_job
from wanlora.engine.config import jobdir
from wanlora.engine.config.findings import JobError
from wanlora.engine.config.io import dump_job, job_from_dict, parse_toml
from wanlora.engine.config.presets import resolve
from wanlora.engine.config.schema import expert_plan
from wanlora.engine.model.lora_format import read_lora
from wanlora.engine.train.loop import run

from tests.engine.conftest import make_job_dir

pytestmark = pytest.mark.usefixtures("_home")  # a private WANLORA_HOME, offline (tests/engine/conftest.py)

CPU = torch.device("cpu")
PER_EXPERT = """
[job]
name = "pe"
preset = "style"
vram_tier = 80
[multistage]
low_noise = true
[multistage.high_noise]
learning_rate = 5e-5
rank = 32
timestep_bias = "balanced"
[target]
alpha = 8
"""


def test_tables_resolve_with_origins_and_round_trip() -> None:
    r = resolve(parse_toml(PER_EXPERT))
    job = r.job
    assert job.multistage.high_noise.train and job.multistage.low_noise.train  # a table means "trained"
    assert r.origins["multistage.high_noise.learning_rate"] == "user"
    assert r.origins["multistage.high_noise.train"] == "recipe"  # the style recipe's high_noise = true
    assert r.origins["multistage.low_noise.train"] == "user"  # the shorthand counts as the user's
    hi, lo = expert_plan(job, "high_noise"), expert_plan(job, "low_noise")
    assert (hi.learning_rate, hi.rank, hi.alpha, hi.timestep_bias) == (5e-5, 32, 8.0, "balanced")
    assert hi.sources["learning_rate"] == "multistage.high_noise.learning_rate" and hi.sources["alpha"] == "target.alpha"
    # the style recipe's own values for the expert that sets nothing
    assert (lo.learning_rate, lo.rank, lo.timestep_bias) == (1e-4, 16, "high_noise")
    assert lo.sources == {"learning_rate": "training.learning_rate", "rank": "target.rank", "alpha": "target.alpha",
                          "timestep_type": "training.timestep_type", "timestep_bias": "training.timestep_bias",
                          "weight_decay": "training.weight_decay"}
    text = dump_job(job)
    assert "[multistage.high_noise]" in text and "low_noise = true" in text  # compact when nothing is overridden
    assert job_from_dict(parse_toml(text)) == job


def test_alpha_follows_the_experts_own_rank_when_no_alpha_is_set() -> None:
    job = job_from_dict({"multistage": {"low_noise": {"rank": 4}}})
    assert (expert_plan(job, "low_noise").rank, expert_plan(job, "low_noise").alpha) == (4, 4.0)  # scale 1
    assert expert_plan(job, "high_noise").alpha == 16.0


def test_bad_values_name_the_expert_key() -> None:
    with pytest.raises(JobError) as e:
        job_from_dict({"multistage": {"high_noise": {"learning_rate": 0.5}}})
    assert e.value.findings[0].key == "multistage.high_noise.learning_rate"
    with pytest.raises(JobError) as e:
        job_from_dict({"multistage": {"low_noise": "yes"}})
    assert e.value.findings[0].key == "multistage.low_noise" and "[multistage.low_noise]" in e.value.findings[0].message
    with pytest.raises(JobError) as e:
        job_from_dict({"multistage": {"high_noise": {"learning_rat": 1e-4}}})
    assert "multistage.high_noise.learning_rate" in e.value.findings[0].fix


def test_settings_on_an_expert_that_does_not_train_are_a_warning() -> None:
    job = job_from_dict({"multistage": {"low_noise": {"train": False, "learning_rate": 1e-5}}})
    (f,) = [f for f in validate_job(job, check_files=False) if f.key == "multistage.low_noise.train"]
    assert f.level == "warning" and "learning_rate" in f.message


def test_show_says_where_each_experts_value_comes_from(tmp_path: Path, capsys) -> None:
    from wanlora.tui.cli import main

    p = tmp_path / "job.toml"
    p.write_text(PER_EXPERT)
    assert main(["show", str(p)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("# high_noise expert"))
    assert "learning_rate 5e-05 (multistage.high_noise.learning_rate, user)" in line
    assert "rank 32 (multistage.high_noise.rank, user)" in line
    low = next(ln for ln in out.splitlines() if ln.startswith("# low_noise expert"))
    assert "learning_rate 0.0001 (training.learning_rate, recipe)" in low
    body = "\n".join(ln for ln in out.splitlines() if not ln.startswith("#"))
    assert resolve(parse_toml(body)).job == resolve(parse_toml(PER_EXPERT)).job  # show's output is the job


def test_each_expert_trains_with_its_own_learning_rate_and_rank(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    jd = make_job_dir(tmp_path, clips, tiny_model, steps=4, multistage__switch_every=2,
                      multistage__high_noise={"learning_rate": 2e-4},
                      multistage__low_noise={"learning_rate": 7e-4, "rank": 4, "timestep_type": "shift"})
    assert run(jd, device=CPU) == jobdir.EXIT_OK
    events = list(jobdir.read_events(jd))
    steps = [e for e in events if e["type"] == "step"]
    assert [(s["expert"], s["lr"]) for s in steps] == [("high_noise", 2e-4)] * 2 + [("low_noise", 7e-4)] * 2
    ready = next(e for e in events if e["type"] == "state" and e["state"] == "ready")
    settings = ready["expert_settings"]
    assert settings["high_noise"]["learning_rate"] == 2e-4 and settings["high_noise"]["rank"] == 8
    assert settings["low_noise"]["sources"]["learning_rate"] == "multistage.low_noise.learning_rate"
    assert (settings["low_noise"]["rank"], settings["low_noise"]["alpha"]) == (4, 8.0)  # demo job: alpha = 8
    out = jd / "checkpoints"
    for expert, lr, rank in (("high_noise", 2e-4, 8), ("low_noise", 7e-4, 4)):
        tensors, meta = read_lora(out / f"wanlora_demo_{expert}.safetensors")
        training = json.loads(meta["training"])
        assert training["learning_rate"] == lr and meta["rank"] == str(rank)
        a = next(v for k, v in tensors.items() if k.endswith("lora_A.weight"))
        assert a.shape[0] == rank  # the file really holds a rank-`rank` LoRA
    _, meta = read_lora(out / "wanlora_demo_low_noise.safetensors")
    assert json.loads(meta["training"])["timestep_type"] == "shift"
    assert json.loads(meta["training"])["per_expert"] == ["learning_rate", "rank", "timestep_type"]


def test_compare_loads_each_experts_own_rank(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """`wanlora compare` rebuilds each expert's LoRA with that expert's rank before loading its files."""
    from wanlora.engine.train.demo import write_job_dir
    from wanlora.tui.cli import main

    from tests.engine.train.test_eval_compare import _eval_job_dict

    d = _eval_job_dict(tmp_path, tiny_model, multistage__low_noise={"rank": 4})
    d["sample"]["prompts"] = d["sample"]["prompts"][:1]  # one preview column is enough to load every file
    jd = write_job_dir(tmp_path / "job", d)
    assert run(jd, device=CPU) == jobdir.EXIT_OK
    assert main(["compare", str(jd), "--cpu", "--steps", "4"]) == 0, capsys.readouterr()
    assert "Suggested pick" in capsys.readouterr().out
