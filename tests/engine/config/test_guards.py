"""Holes found by fault injection, closed at the contract: strict types, a nesting-depth guard before TOML
parsing, the output_dir policy, every unreadable clip named, a FIFO or /dev/zero caption never read, and
no "did you mean `job.gpus`?" for a `[bogus]` section.  (Issue #13, points 3-6 and 9.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wanlora.engine.checks.validate import check_file
from wanlora.engine.config.findings import JobError
from wanlora.engine.config.io import job_from_dict, parse_toml
from wanlora.engine.data.scan import MAX_CAPTION_BYTES, scan_folder
from wanlora.engine.data.synthetic import write_bad_files, write_clips

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("guard-clips")
    write_clips(d, n=2, num_frames=12, size=(32, 32))
    return d


def _job(folder: Path, **job: object) -> str:
    lines = ["[job]", 'name = "guarded"', 'trigger_word = "sks"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in job.items()]
    lines += ["[model]", 'name_or_path = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"', "[[datasets]]", f'folder = "{folder}"',
              "num_frames = 9", "resolutions = [64]"]
    return "\n".join(lines) + "\n"


def _errors(findings: list) -> dict[str, str]:
    return {f.key: f"{f.message} Fix: {f.fix}" for f in findings if f.level == "error"}


# ---- 5: strict types ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "key", "value", "word"), [
    ("target", "rank", '"8"', "whole number"),
    ("training", "steps", "4.0", "decimal point"),
    ("multistage", "low_noise", "0", "use true/false"),
    ("training", "gradient_checkpointing", '"yes"', "true or false"),
    ("save", "every", "true", "whole number"),
    ("job", "gpus", "[0.0]", ""),
    ("job", "vram_tier", '"24"', ""),
])
def test_types_are_checked_not_coerced_and_the_refusal_names_the_key(section: str, key: str, value: str,
                                                                      word: str) -> None:
    with pytest.raises(JobError) as e:
        job_from_dict(parse_toml(f"[{section}]\n{key} = {value}\n"))
    keys = {f.key: f for f in e.value.findings}
    assert f"{section}.{key}" in keys, keys
    f = keys[f"{section}.{key}"]
    assert word in f"{f.message} {f.fix}", f


def test_a_toml_integer_is_still_a_float() -> None:
    job = job_from_dict(parse_toml("[training]\nmax_grad_norm = 2\n[[datasets]]\nweight = 3\n[model]\nboundary_ratio = 0\n"
                                   .replace("boundary_ratio = 0", 'boundary_ratio = "auto"')))
    assert job.training.max_grad_norm == 2.0 and isinstance(job.training.max_grad_norm, float)
    assert job.datasets[0].weight == 3.0


# ---- 4: nesting depth before parsing --------------------------------------------------------------------------

def test_a_20000_level_dotted_key_is_refused_before_tomllib_sees_it() -> None:
    text = "[job]\n" + "k" + ".k" * 20_000 + " = 1\n"  # 40 KB; tomllib takes 17-21 s on it (quadratic)
    assert 30_000 < len(text) < 50_000
    t0 = time.monotonic()
    with pytest.raises(JobError) as e:
        parse_toml(text, "deep.toml")
    assert time.monotonic() - t0 < 1.0
    f = e.value.findings[0]
    assert f.key == "deep.toml" and "nested 20001 levels deep" in f.message and f.fix


def test_deep_arrays_and_inline_tables_are_refused_and_normal_files_pass() -> None:
    for text in ("x = " + "[" * 5000 + "]" * 5000, "x = " + "{a = " * 40 + "1" + "}" * 40):
        with pytest.raises(JobError, match="nested"):
            parse_toml(text)
    # dots and brackets inside strings and comments do not count; a real job file passes
    ok = parse_toml('[job]\nname = "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s"  # a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r\n'
                    "[[sample.prompts]]\nprompt = '''[[[[[[[[[[[[[[[[[[[[[[[[[[[\n.........................'''\n")
    assert ok["job"]["name"].count(".") == 18


# ---- 9: unknown section suggestion ---------------------------------------------------------------------------

def test_a_bogus_section_gets_no_dotted_suggestion_and_a_misspelt_one_gets_the_section() -> None:
    with pytest.raises(JobError) as e:
        job_from_dict(parse_toml("[bogus]\nx = 1\n"))
    f = e.value.findings[0]
    assert f.key == "bogus" and "job.gpus" not in f.fix and "did you mean" not in f.fix, f
    with pytest.raises(JobError) as e:
        job_from_dict(parse_toml("[trainin]\nsteps = 10\n"))
    assert e.value.findings[0].fix == "did you mean `training`?"
    with pytest.raises(JobError) as e:  # a key written above its table still gets its table
        job_from_dict(parse_toml("steps = 10\n"))
    assert e.value.findings[0].fix == "did you mean `training.steps`?"


# ---- 6: output_dir policy ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "word"), [
    ("/etc", "system folder"),
    ("/", "system folder"),
    ("/proc/self", "system folder"),
    ("/etc/passwd", "existing file"),
    ("../../", "climbs out"),
    ("loras/../../../x", "climbs out"),
    ("/opt/elsewhere", "outside the folders"),
])
def test_bad_output_dirs_are_refused_by_validate_with_the_fix(tmp_path: Path, clips: Path, monkeypatch,
                                                              value: str, word: str) -> None:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    job = tmp_path / "job.toml"
    job.write_text(_job(clips, output_dir=value))
    _res, findings = check_file(job)
    errs = _errors(findings)
    assert "job.output_dir" in errs, findings
    assert word in errs["job.output_dir"] and "leave output_dir empty" in errs["job.output_dir"]


def test_good_output_dirs_pass_home_relative_and_configured_roots(tmp_path: Path, clips: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("WANLORA_HOME", str(home))
    extra = tmp_path / "loras"
    for value in ("", "loras", str(home / "out"), str(extra)):
        job = tmp_path / "job.toml"
        job.write_text(_job(clips, output_dir=value))
        errs = _errors(check_file(job)[1])
        if value == str(extra):
            assert "job.output_dir" in errs  # not allowed until the daemon config lists it
            (home / "config.toml").write_text(f'output_roots = ["{extra}"]\n')
            errs = _errors(check_file(job)[1])
        assert "job.output_dir" not in errs, (value, errs)


# ---- 3 and 9: only regular files are read; every unreadable clip is named ---------------------------------------

def test_fifo_and_dev_zero_captions_and_a_fifo_clip_never_block_the_scan(tmp_path: Path) -> None:
    d = tmp_path / "data"
    write_clips(d, n=4, num_frames=12, size=(32, 32))
    (d / "clip_000.txt").unlink()
    os.mkfifo(d / "clip_000.txt")  # a reader would block here forever
    (d / "clip_001.txt").unlink()
    os.symlink("/dev/zero", d / "clip_001.txt")  # a reader would read until MemoryError
    (d / "clip_002.txt").write_bytes(b"x" * (MAX_CAPTION_BYTES + 1))
    os.mkfifo(d / "pipe.mp4")
    t0 = time.monotonic()
    rep = scan_folder(d)
    assert time.monotonic() - t0 < 20
    errors = {c.path.name: c.error for c in rep.unreadable}
    assert "clip_000.txt is a FIFO" in errors["clip_000.mp4"]
    assert "clip_001.txt is a device" in errors["clip_001.mp4"]
    assert "KB" in errors["clip_002.mp4"]
    assert [c.path.name for c in rep.usable] == ["clip_003.mp4"]
    assert ("pipe.mp4", "a FIFO (named pipe)") in [(p.name, w) for p, w in rep.skipped]
    # `wanlora scan` on that folder finishes and names them too
    r = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "scan", "--json", str(d)], capture_output=True,
                       text=True, timeout=120, cwd=REPO)
    out = json.loads(r.stdout)
    assert {u["file"] for u in out["unreadable"]} == {"clip_000.mp4", "clip_001.mp4", "clip_002.mp4"}
    assert {s["file"] for s in out["skipped"]} >= {"pipe.mp4", "clip_000.txt"}


def test_validate_names_every_unreadable_clip_and_points_at_scan_json_past_the_limit(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    d = tmp_path / "data"
    write_clips(d, n=2, num_frames=12, size=(32, 32))
    for i in range(3):  # 6 unreadable files: the old message named 3
        for p in write_bad_files(tmp_path / f"bad{i}"):
            p.rename(d / f"{i}_{p.name}")
    job = tmp_path / "job.toml"
    job.write_text(_job(d))
    warn = [f for f in check_file(job)[1] if f.key == "datasets[0].folder" and "cannot be read" in f.message]
    assert len(warn) == 1 and warn[0].message.startswith("6 file(s)")
    for i in range(3):
        for name in ("empty.mp4", "truncated.mp4"):
            assert f"{i}_{name}:" in warn[0].message, warn[0].message
    for i in range(30):  # past the limit: 20 names, then where the rest are
        (d / f"zz_{i:02d}.mp4").write_bytes(b"")
    warn = [f for f in check_file(job)[1] if f.key == "datasets[0].folder" and "cannot be read" in f.message]
    msg = warn[0].message
    assert msg.startswith("36 file(s)") and msg.count(".mp4:") == 20
    assert f"and 16 more (`wanlora scan --json {d}` lists them all)" in msg
