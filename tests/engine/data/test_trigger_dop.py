"""Trigger and DOP semantics as ai-toolkit users expect them.

- ``[trigger]`` is replaced by the trigger word; with a trigger word, every non-regularization caption that
  lacks it gets it prepended (ai-toolkit's ``inject_trigger_into_prompt``); ``job.inject_trigger = false``
  turns that off; ``wanlora validate`` / ``scan`` / ``show`` say which captions get it.
- DOP's preservation prompt is the training caption with the trigger replaced by the class word, so it is
  never the caption being trained (which would make DOP pull the LoRA back to the base model on it);
  DOP without a trigger word is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from wanlora.engine.checks.validate import check_file
from wanlora.engine.config.io import job_from_dict
from wanlora.engine.data.captions import final_caption, sample_preservation_prompt, training_caption
from wanlora.engine.data.synthetic import write_clips

from tests.engine.conftest import clean_job


def by_key(path: Path) -> dict[str, list]:
    _, findings = check_file(path)
    out: dict[str, list] = {}
    for f in findings:
        out.setdefault(f.key, []).append(f)
    return out


def test_trigger_is_prepended_to_captions_that_lack_it() -> None:
    assert training_caption("a woman walking", "frung") == "frung a woman walking"
    assert training_caption("[trigger], a woman walking", "frung") == "frung, a woman walking"
    assert training_caption("close-up of frung smiling", "frung") == "close-up of frung smiling"  # already there
    assert training_caption("frungle dancing", "frung") == "frung frungle dancing"  # a whole word, not a prefix
    assert training_caption("", "frung") == "frung"
    assert training_caption("a woman walking", "frung", is_regularization=True) == "a woman walking"
    assert training_caption("a woman walking", "frung", inject=False) == "a woman walking"
    assert training_caption("a woman walking", "") == "a woman walking"
    assert final_caption("a woman walking", "frung", dropped=True) == ""  # dropout: the unconditional prompt


def test_dop_prompts_differ_with_and_without_the_trigger_and_never_equal_the_caption() -> None:
    with_trigger, without = "[trigger], a woman walking", "a woman dancing"
    p1 = sample_preservation_prompt(with_trigger, "frung", "person")
    p2 = sample_preservation_prompt(without, "frung", "person")
    assert (p1, p2) == ("person, a woman walking", "person a woman dancing")
    assert p1 != training_caption(with_trigger, "frung") and p2 != training_caption(without, "frung")
    # even when the trigger is not injected, DOP does not preserve the training caption itself
    assert sample_preservation_prompt(without, "frung", "person", inject=False) != training_caption(
        without, "frung", inject=False)
    # regularization data trains as written and is preserved as written (that is what it is for)
    assert sample_preservation_prompt(without, "frung", "person", is_regularization=True) == without


def test_dataset_and_dop_batch_prompts_follow_the_rule(tmp_path: Path) -> None:
    """Through the real dataset: the captions a batch trains with and their preservation prompts."""
    from wanlora.engine.data.dataset import build_dataset
    from wanlora.engine.train.dop import batch_prompts

    d = tmp_path / "clips"
    write_clips(d, n=2, num_frames=9, size=(64, 64), caption="[trigger] a red square moving right")
    (d / "clip_001.txt").write_text("a red square moving right")  # one caption without the trigger
    job = job_from_dict({"job": {"trigger_word": "sks"}, "training": {"dop": {"enabled": True, "preservation_class": "shape"}},
                         "datasets": [{"folder": str(d), "resolutions": [64], "num_frames": 9, "caption_dropout": 0.0}]})
    ds = build_dataset(job, batch_size=2)
    try:
        batch = ds.next_batch()
    finally:
        ds.close()
    assert sorted(batch.captions) == ["sks a red square moving right"] * 2
    prompts = batch_prompts(batch, "sks", "shape")
    assert prompts == ["shape a red square moving right"] * 2
    assert not set(prompts) & set(batch.captions)


def test_validate_refuses_dop_without_a_trigger(job_file, ten_clips) -> None:
    p = job_file(clean_job(ten_clips) + "[training.dop]\nenabled = true\n")
    (f,) = [x for x in by_key(p)["training.dop.enabled"] if x.level == "error"]
    assert "job.trigger_word" in f.message and "job.trigger_word" in f.fix and "dop.enabled = false" in f.fix


def test_validate_warns_when_a_preservation_prompt_would_equal_its_caption(job_file, ten_clips) -> None:
    p = job_file(clean_job(ten_clips, 'trigger_word = "person"') + "[training.dop]\nenabled = true\n"
                 'preservation_class = "person"\n')
    (f,) = by_key(p)["training.dop.preservation_class"]
    assert f.level == "warning" and "equals its training caption" in f.message


def test_validate_says_which_captions_get_the_trigger(job_file, ten_clips) -> None:
    p = job_file(clean_job(ten_clips, 'trigger_word = "frung"'))
    (f,) = by_key(p)["job.inject_trigger"]
    assert f.level == "info" and "10 of 10" in f.message and "inject_trigger = false" in f.fix
    off = job_file(clean_job(ten_clips, 'trigger_word = "frung"\ninject_trigger = false') +
                   "[training.dop]\nenabled = true\n", name="off.toml")
    (w,) = by_key(off)["job.inject_trigger"]
    assert w.level == "warning" and "DOP" in w.message


def test_trainer_refuses_dop_without_a_trigger(tmp_path: Path) -> None:
    """A job folder written by hand (not through validate) still cannot train DOP on its own captions."""
    from wanlora.engine.config import jobdir
    from wanlora.engine.train.demo import demo_job_dict, write_job_dir
    from wanlora.engine.train.loop import run

    d = demo_job_dict(tmp_path / "clips", tmp_path / "no-model", job__trigger_word="")
    d["training"]["dop"] = {"enabled": True}
    jd = write_job_dir(tmp_path / "job", d)
    assert run(jd) == jobdir.EXIT_CONFIG
    err = next(e for e in jobdir.read_events(jd) if e["type"] == "error")
    assert "training.dop.enabled" in err["message"] and "job.trigger_word" in err["message"]


def test_trainer_refuses_dop_with_unload_text_encoder_as_validate_does(tmp_path: Path) -> None:
    """Started directly (no validate), the trainer would map DOP's class prompts to the trigger and pull the
    LoRA back to the base model; it refuses with validate's own finding, before any model is read."""
    from wanlora.engine.checks.validate import validate_job
    from wanlora.engine.config import jobdir
    from wanlora.engine.train.demo import demo_job_dict, write_job_dir
    from wanlora.engine.train.loop import run

    d = demo_job_dict(tmp_path / "clips", tmp_path / "no-model")
    d["training"].update(unload_text_encoder=True, dop={"enabled": True, "preservation_class": "shape"})
    jd = write_job_dir(tmp_path / "job", d)
    assert run(jd) == jobdir.EXIT_CONFIG
    err = next(e for e in jobdir.read_events(jd) if e["type"] == "error")
    (finding,) = [f for f in validate_job(job_from_dict(d), check_files=False)
                  if f.key == "training.unload_text_encoder" and f.level == "error"]
    assert str(finding) in err["message"]  # the same words, message and fix
    assert "no-model" not in err["message"]  # refused before the (absent) model was looked for


def test_scan_shows_which_captions_get_the_trigger(tmp_path: Path, capsys) -> None:
    from wanlora.tui.cli import main

    d = tmp_path / "clips"
    write_clips(d, n=2, num_frames=9, size=(32, 32), caption="[trigger] a red square")
    (d / "clip_001.txt").write_text("a red square")
    assert main(["scan", str(d), "--trigger", "sks"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 caption(s) lack the trigger 'sks'" in out and "inject_trigger = false" in out
    assert "yes+trigger" in out
    assert main(["scan", str(d), "--trigger", "sks", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["trigger"]["prepended"] == ["clip_001.mp4"]
    assert {i["file"]: i["training_caption"] for i in rep["items"]} == {
        "clip_000.mp4": "sks a red square", "clip_001.mp4": "sks a red square"}


def test_demo_trains_with_a_trigger_word_matching_its_captions(tmp_path: Path) -> None:
    from wanlora.engine.data.synthetic import DEFAULT_CAPTION
    from wanlora.engine.train.demo import demo_job_dict

    job = job_from_dict(demo_job_dict(tmp_path, tmp_path))
    assert "[trigger]" in DEFAULT_CAPTION and job.job.trigger_word.strip()
    assert training_caption(DEFAULT_CAPTION, job.job.trigger_word).startswith(job.job.trigger_word + " ")
