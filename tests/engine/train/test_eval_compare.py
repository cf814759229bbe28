"""Choosing the checkpoint (#17) on the tiny model: held-out eval data, eval loss, `wanlora compare`, the pick.

One short training run (both experts, a checkpoint at step 2 and the final pair at step 4, an ``is_eval``
dataset plus an ``eval_fraction`` on the training folder) is shared by the tests of this module.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from PIL import Image
from wanlora.engine.config import jobdir
from wanlora.engine.config.io import load_job
from wanlora.engine.train.demo import demo_job_dict, write_job_dir

CPU = torch.device("cpu")


def _eval_job_dict(root: Path, model: Path, **kw) -> dict:
    from wanlora.engine.data.synthetic import write_clips

    train, held = root / "train", root / "held"
    if not train.exists():
        write_clips(train, n=5, num_frames=24, size=(64, 64), seed=1)
        write_clips(held, n=2, num_frames=24, size=(64, 64), seed=9, prefix="held",
                    caption="a red square moving right slowly")
    d = demo_job_dict(train, model, steps=4, **kw)
    d["save"].update({"every": 2, "max_keep": 4})
    d["multistage"]["low_noise"] = {"train": True, "rank": 4}  # per-expert rank: compare must follow it
    d["datasets"][0]["eval_fraction"] = 0.2
    d["datasets"].append({"folder": str(held), "resolutions": [64], "num_frames": 9, "is_eval": True})
    ctrl = root / "ctrl.png"
    Image.fromarray((np.indices((64, 64)).sum(0) % 256).astype("uint8")[..., None].repeat(3, -1)).save(ctrl)
    d["sample"] = {"width": 64, "height": 64, "num_frames": 5, "steps": 2, "fps": 8,
                   "prompts": [{"prompt": "a red square moving right", "ctrl_img": str(ctrl)},
                               {"prompt": "the square stops", "ctrl_img": str(ctrl), "seed": 7}]}
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, list[list[str]]]:
    """(job folder, paths of every training batch) after a 4-step run with eval data."""
    from wanlora.engine.train import loop

    root = tmp_path_factory.mktemp("evaljob")
    jd = write_job_dir(root / "job", _eval_job_dict(root, tiny_model))
    seen: list[list[str]] = []
    original = loop.Trainer.forward_loss

    def spy(self, ex, batch):
        seen.append(list(batch.paths))
        return original(self, ex, batch)

    loop.Trainer.forward_loss = spy
    try:
        assert loop.run(jd, device=CPU) == jobdir.EXIT_OK
    finally:
        loop.Trainer.forward_loss = original
    return jd, seen


def _evals(jd: Path) -> list[dict]:
    return [e for e in jobdir.read_events(jd) if e["type"] == "eval"]


# ---------------------------------------------------------------- the hold-out
def test_held_out_choice_is_stable_partial_and_by_name() -> None:
    from wanlora.engine.data.holdout import held_out

    names = [f"clip_{i:03d}.mp4" for i in range(10)]
    a = held_out(names, fraction=0.2)
    assert len(a) == 2 and a == held_out(list(names), fraction=0.2)
    # adding a clip never moves a training clip into the eval set (only the new clip may take a place)
    more = [*names, "zz_new.mp4"]
    assert {more[i] for i in held_out(more, fraction=0.2)} <= {names[i] for i in a} | {"zz_new.mp4"}
    assert held_out(names, is_eval=True) == set(range(10))
    assert held_out(names[:1], fraction=0.5) == set()  # a single clip stays for training
    assert len(held_out(names[:2], fraction=0.5)) == 1  # never all of them
    assert held_out(names, fraction=0.0) == set()


def test_eval_clips_never_reach_a_training_batch(trained, tiny_model: Path) -> None:
    from wanlora.engine.data.dataset import build_dataset

    jd, seen = trained
    job = load_job(jd / "job.toml")
    train = build_dataset(job)
    held = build_dataset(job, split="eval", batch_size=1)
    train_files = {str(e.path) for ents in train.entries for e in ents}
    held_files = {str(e.path) for ents in held.entries for e in ents}
    assert len(held_files) == 3  # both clips of the is_eval folder + 1 of 5 by eval_fraction
    assert not train_files & held_files and len(train_files) == 4
    # the real run: every batch the trainer trained on came from the training split only
    used = {p for batch in seen for p in batch}
    assert seen and used <= train_files
    # and a long stretch of the order (many epochs) never draws a held-out clip
    drawn = {str(p) for _ in range(40) for p in train.next_batch().paths}
    assert drawn == train_files
    train.close()
    held.close()


# ---------------------------------------------------------------- the eval loss
def test_eval_is_recorded_at_every_save_per_expert_and_band(trained) -> None:
    jd, _ = trained
    evs = _evals(jd)
    assert [(e["step"], e["final"]) for e in evs] == [(2, False), (4, True)]
    for e in evs:
        assert set(e["experts"]) == {"high_noise", "low_noise"} and e["items"] == 3
        hi, lo = e["experts"]["high_noise"], e["experts"]["low_noise"]
        assert all(900 <= b["t"] <= 1000 for b in hi["bands"]) and all(0 <= b["t"] < 900 for b in lo["bands"])
        for r in (hi, lo):
            assert len(r["bands"]) == 4
            assert r["loss"] == pytest.approx(sum(b["loss"] for b in r["bands"]) / 4)
    st = jobdir.read_status(jd)
    assert st["eval"] == {"step": 4, "high_noise": round(evs[-1]["experts"]["high_noise"]["loss"], 6),
                          "low_noise": round(evs[-1]["experts"]["low_noise"]["loss"], 6)}
    assert (jd / "eval" / "inputs.safetensors").is_file()


def test_eval_loss_equals_an_independent_computation(trained, tiny_model: Path) -> None:
    """The band loss of a file = MSE(model(cat(x_t, cond), t), ε − x₀) recomputed here by hand."""
    from wanlora.engine.model.folder import load_expert
    from wanlora.engine.model.lora import add_lora, load_lora_state_dict
    from wanlora.engine.model.lora_format import comfy_to_peft, read_lora
    from wanlora.engine.train.evaluate import load_inputs, noise_seed

    jd, _ = trained
    ev = _evals(jd)[0]
    res = ev["experts"]["low_noise"]
    es = load_inputs(jd / "eval" / "inputs.safetensors")
    model = load_expert(tiny_model, "low_noise", torch.float32)
    add_lora(model, 4, 8)  # [multistage.low_noise] rank = 4 (alpha stays target.alpha = 8)
    load_lora_state_dict(model, comfy_to_peft(read_lora(Path(res["file"]))[0])[0])
    model.eval()
    band = res["bands"][1]
    total = 0.0
    with torch.no_grad():
        for it in es.items:
            x0 = it.x0[None]
            eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(noise_seed(it.key)))
            s = band["t"] / 1000.0
            xt = (1 - s) * x0 + s * eps
            emb = torch.zeros(1, 512, it.rows.shape[1])
            emb[0, : it.rows.shape[0]] = it.rows
            pred = model(torch.cat([xt, it.cond[None]], 1), timestep=torch.tensor([band["t"]]),
                         encoder_hidden_states=emb, return_dict=False)[0]
            total += ((pred - (eps - x0)) ** 2).mean().item()
    assert band["loss"] == pytest.approx(total / len(es.items), rel=1e-6)


def test_eval_loss_recomputed_later_is_identical(trained) -> None:
    from wanlora.engine.train.compare import compare_job

    jd, _ = trained
    recorded = {Path(r["file"]).name: r for e in _evals(jd) for r in e["experts"].values()}
    res = compare_job(jd, device=CPU, previews=False, recompute=True, out_dir=jd / "recompute", say=lambda m: None)
    again = {Path(r.files[e]).name: r.evals[e] for r in res.rows for e in r.evals}
    assert set(again) == set(recorded) and len(again) == 4
    for name, r in again.items():
        assert r["source"] == "compare"
        assert r["loss"] == recorded[name]["loss"]  # bit for bit, not approximately
        assert [b["loss"] for b in r["bands"]] == [b["loss"] for b in recorded[name]["bands"]]


# ---------------------------------------------------------------- compare
def test_compare_writes_sheet_grid_index_and_reuses_cells(trained, capsys) -> None:
    from wanlora.engine.data.decode import probe_video
    from wanlora.tui.cli import main

    jd, _ = trained
    assert main(["compare", str(jd), "--cpu"]) == 0
    out = capsys.readouterr().out
    assert "[4/4]" in out and "rendered" in out and "Suggested pick" in out
    cmp = jd / "compare"
    index = json.loads((cmp / "index.json").read_text())
    assert [c["label"] for c in index["checkpoints"]] == ["step 2", "final (step 4)"]
    recorded = {Path(r["file"]).name: r["loss"] for e in _evals(jd) for r in e["experts"].values()}
    for c in index["checkpoints"]:
        assert {e: v["loss"] for e, v in c["eval"].items()} == {e: recorded[Path(f).name] for e, f in c["files"].items()}
        assert len(c["cells"]) == 2 and all(Path(x["mp4"]).is_file() for x in c["cells"])
    sheet = Image.open(cmp / "sheet.png")
    # label column + 2 prompts × (3 frames of 64 px + gaps); a header + 2 rows of 64 px
    assert sheet.size == (200 + 2 * (3 * 64 + 2 * 2 + 8), 28 + 16 + 2 * (64 + 8))
    grid = probe_video(cmp / "grid.mp4")
    assert grid.frames == 5 and grid.width % 16 == 0 and grid.width >= 200 + 2 * 64 and grid.height >= 2 * 64
    mtimes = {p.name: p.stat().st_mtime_ns for p in (cmp / "cells").glob("*.mp4")}
    assert len(mtimes) == 4
    # second run: every cell comes from disk
    assert main(["compare", str(jd), "--cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count(": reused") == 4 and "rendered in" not in out and "0 cell(s) rendered, 4 reused" in out
    assert {p.name: p.stat().st_mtime_ns for p in (cmp / "cells").glob("*.mp4")} == mtimes
    # a subset by --steps: the same cells again, no new rendering
    assert main(["compare", str(jd), "--cpu", "--steps", "2"]) == 0
    assert "0 cell(s) rendered, 2 reused" in capsys.readouterr().out
    assert main(["compare", str(jd), "--cpu", "--steps", "3"]) == 1
    assert "no kept checkpoint at step 3; kept: 2, 4" in capsys.readouterr().err


def test_suggested_pick_is_the_argmin_of_recorded_losses(trained) -> None:
    from wanlora.engine.train.compare import compare_job

    jd, _ = trained
    res = compare_job(jd, device=CPU, previews=False, out_dir=jd / "pick", say=lambda m: None)
    assert res.timing.get("load_s") is None  # every loss was recorded by the trainer: no model loaded
    index = json.loads(res.index.read_text())
    for expert in ("high_noise", "low_noise"):
        losses = {c["step"]: c["eval"][expert]["loss"] for c in index["checkpoints"]}
        best = min(losses, key=losses.get)
        p = index["pick"][expert]
        assert p["step"] == best and p["loss"] == losses[best]
        assert p["confidence"] in ("high", "medium", "low") and 0 <= p["agreement"] <= 1


def test_pick_per_expert_can_differ_and_confidence_follows_the_bands() -> None:
    from wanlora.engine.train.pick import Candidate, suggest

    high = [Candidate(1000, "h1", 0.50, (0.5, 0.5, 0.5, 0.5)), Candidate(2000, "h2", 0.40, (0.4, 0.4, 0.4, 0.4)),
            Candidate(3000, "h3", 0.45, (0.45,) * 4)]
    low = [Candidate(1000, "l1", 0.300, (0.2, 0.4, 0.3, 0.3)), Candidate(2000, "l2", 0.301, (0.3, 0.3, 0.302, 0.302)),
           Candidate(3000, "l3", 0.299, (0.35, 0.25, 0.297, 0.301))]
    picks = suggest({"high_noise": high, "low_noise": low})
    assert (picks["high_noise"].step, picks["high_noise"].confidence, picks["high_noise"].agreement) == (2000, "high", 1.0)
    lo = picks["low_noise"]
    assert lo.step == 3000 and lo.file == "l3"  # argmin of the mean, though half the bands disagree
    assert lo.agreement == 0.5 and lo.confidence == "medium" and lo.margin == pytest.approx(0.001 / 0.299, abs=1e-5)
    assert suggest({"high_noise": high[:1]})["high_noise"].confidence == "only one"
    assert suggest({"high_noise": []}) == {}


def test_one_expert_jobs_preview_with_the_other_experts_base_or_latest(trained) -> None:
    from wanlora.engine.config.io import load_job
    from wanlora.engine.train.compare import find_checkpoints, pair
    from wanlora.engine.train.loop import output_dir

    jd, _ = trained
    job = load_job(jd / "job.toml")
    every = find_checkpoints(job, output_dir(job, jd))
    assert [(c.step, c.final) for c in every] == [(2, False), (4, True)]
    rows = [every[0]]
    rows[0].files.pop("low_noise")  # as if only the high-noise expert had a file at this step
    pair(rows, every, "base")
    assert rows[0].paired["low_noise"] is None and rows[0].paired["high_noise"].name.endswith("_000002.safetensors")
    pair(rows, every, "latest")
    assert rows[0].paired["low_noise"].name == "wanlora_demo_low_noise.safetensors"


# ---------------------------------------------------------------- fast previews
def _accel_pair(folder: Path, tiny_model: Path, rank: int = 4) -> Path:
    from wanlora.engine.model.folder import load_expert
    from wanlora.engine.model.lora import add_lora, lora_state_dict
    from wanlora.engine.model.lora_format import save_lora

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(3)
    for expert, fname in (("high_noise", "high_noise_model.safetensors"), ("low_noise", "low_noise_model.safetensors")):
        m = load_expert(tiny_model, expert, torch.float32)
        add_lora(m, rank, rank)
        sd = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in lora_state_dict(m).items()}
        save_lora(folder / fname, sd, alpha=rank, dtype="bf16", metadata={})
    return folder


def test_accelerator_runs_on_top_and_leaves_the_trained_adapter_as_it_was(tmp_path: Path, tiny_model: Path) -> None:
    from wanlora.engine.config.accelerator import accelerator_files
    from wanlora.engine.model.folder import load_expert
    from wanlora.engine.model.lora import add_lora, lora_state_dict
    from wanlora.engine.train.previews import attach_accelerator, detach_accelerator

    files = accelerator_files(str(_accel_pair(tmp_path / "lightx2v", tiny_model)))
    assert files["high_noise"].name.startswith("high") and files["low_noise"].name.startswith("low")
    m = load_expert(tiny_model, "high_noise", torch.float32)
    params = add_lora(m, 8, 8)
    with torch.no_grad():
        for p in params:
            p.add_(0.05)
    before = {k: v.clone() for k, v in lora_state_dict(m).items()}
    x = torch.randn(1, 36, 3, 8, 8)
    e = torch.randn(1, 16, m.config.text_dim)

    def out():
        with torch.no_grad():
            return m(x, timestep=torch.tensor([950.0]), encoder_hidden_states=e, return_dict=False)[0]

    y0 = out()
    attach_accelerator({"high_noise": m}, files)
    assert set(m.active_adapters()) == {"default", "accelerator"}
    assert (out() - y0).abs().max() > 1e-3
    detach_accelerator({"high_noise": m})
    assert torch.equal(out(), y0) and m.active_adapters() == ["default"]
    assert all(p.requires_grad for p in params)
    assert all(torch.equal(before[k], v) for k, v in lora_state_dict(m).items())


def test_compare_with_an_accelerator_renders_new_labelled_cells(trained, tiny_model: Path) -> None:
    from wanlora.engine.train.compare import compare_job

    jd, _ = trained
    folder = _accel_pair(jd.parent / "accel", tiny_model)
    d = tomllib.loads((jd / "job.toml").read_text())
    d["sample"].update({"accelerator_lora": str(folder), "accelerator_steps": 1, "accelerator_guidance_scale": 1.0})
    acc_dir = jd.parent / "accjob"
    acc_dir.mkdir()
    (acc_dir / "job.toml").write_text(tomli_w.dumps(d))
    (acc_dir / "checkpoints").symlink_to(jd / "checkpoints")
    (acc_dir / "events.jsonl").symlink_to(jd / "events.jsonl")
    msgs: list[str] = []
    res = compare_job(acc_dir, device=CPU, steps=[4], say=msgs.append)
    assert res.rendered == 2 and res.reused == 0 and all("(accelerated)" in m for m in msgs if "rendered in" in m)
    index = json.loads(res.index.read_text())
    assert index["accelerated"] and set(index["accelerator_lora"]) == {"high_noise", "low_noise"}
    assert all(p["steps"] == 1 for p in res.timing["previews"])
    assert "accelerated" in (res.out_dir / "index.md").read_text()


# ---------------------------------------------------------------- checks before a GPU is touched
def test_validation_refuses_all_eval_jobs_and_a_missing_accelerator(tmp_path: Path, tiny_model: Path) -> None:
    from wanlora.engine.checks.validate import validate_job
    from wanlora.engine.config.io import job_from_dict

    d = _eval_job_dict(tmp_path, tiny_model)
    d["datasets"][0]["is_eval"] = True
    d["sample"]["accelerator_lora"] = str(tmp_path / "nope.safetensors")
    found = {(f.level, f.key) for f in validate_job(job_from_dict(d))}
    assert ("error", "datasets") in found and ("error", "sample.accelerator_lora") in found
    d["sample"]["accelerator_lora"] = ["a.safetensors", "b.safetensors", "c.safetensors"]
    msgs = [f.message for f in validate_job(job_from_dict(d)) if f.key == "sample.accelerator_lora"]
    assert msgs and "lists 3 files" in msgs[0]


def test_wanlora_compare_on_the_demo_job(tmp_path: Path, capsys) -> None:
    """`wanlora demo` then `wanlora compare` on its job folder: sheet, grid and index, then all cells reused."""
    from wanlora.tui.cli import main

    assert main(["demo", "--home", str(tmp_path), "--steps", "4"]) == 0
    job = tmp_path / "demo" / "job"
    assert f"wanlora compare {job}" in capsys.readouterr().out
    assert main(["compare", str(job), "--cpu", "--json"]) == 0
    cap = capsys.readouterr()
    index = json.loads(cap.out)
    assert "[2/2]" in cap.err and Path(index["sheet"]).is_file() and Path(index["grid"]).is_file()
    assert [c["step"] for c in index["checkpoints"]] == [2, 4]
    assert all(set(c["eval"]) == {"high_noise", "low_noise"} for c in index["checkpoints"])
    t = index["timing"]
    assert t["rendered"] == 2 and t["reused"] == 0 and t["preview_s_mean"] > 0 and t["device"] == "cpu"
    assert (job / "compare" / "index.md").is_file()
    assert main(["compare", str(job), "--cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["timing"]["reused"] == 2


def test_training_previews_with_an_accelerator_are_labelled_and_leave_training_untouched(
        tmp_path: Path, tiny_model: Path) -> None:
    from wanlora.engine.model.lora import lora_state_dict
    from wanlora.engine.train.events import EventLog, Status
    from wanlora.engine.train.loop import Trainer

    d = _eval_job_dict(tmp_path, tiny_model)
    d["sample"].update({"accelerator_lora": [str(p) for p in sorted(_accel_pair(tmp_path / "acc", tiny_model).iterdir())],
                        "accelerator_steps": 1, "accelerator_guidance_scale": 1.0})
    d["sample"]["prompts"] = d["sample"]["prompts"][:1]
    jd = write_job_dir(tmp_path / "job", d)
    tr = Trainer(load_job(jd / "job.toml"), jd, EventLog(jd), Status(jd), device=CPU)
    tr.setup()
    tr.train_step()
    before = {n: {k: v.clone() for k, v in lora_state_dict(ex.model).items()} for n, ex in tr.experts.items()}
    trainable = {n: [p for p in ex.model.parameters() if p.requires_grad] for n, ex in tr.experts.items()}
    assert tr.sample_previews()
    ev = [e for e in jobdir.read_events(jd) if e["type"] == "sample"]
    assert len(ev) == 1 and ev[0]["accelerated"] is True and ev[0]["steps"] == 1
    for n, ex in tr.experts.items():
        assert ex.model.active_adapters() == ["default"] and "accelerator" not in ex.model.peft_config
        assert all(torch.equal(before[n][k], v) for k, v in lora_state_dict(ex.model).items())
        assert [p for p in ex.model.parameters() if p.requires_grad] == trainable[n]
        assert all(any(p is q for q in ex.params) for p in trainable[n])  # the optimizer's own parameters
    tr.train_step()  # training goes on with the trained adapter alone
