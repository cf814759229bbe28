"""The Foundation verbs end to end: validate, show, presets, import-aitk, estimate."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from wanlora.engine.data.synthetic import write_clips
from wanlora.tui.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "engine" / "config" / "fixtures"


@pytest.fixture(scope="module")
def crash_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job that crashes ai-toolkit: prompt without ctrl_img, num_frames 40, [trigger] without a trigger word."""
    d = tmp_path_factory.mktemp("crash")
    write_clips(d / "clips", n=10, num_frames=48, caption="[trigger] orbit")
    p = d / "crash.toml"
    p.write_text(f'''[job]
name = "crash"
vram_tier = 80
[[datasets]]
folder = "{d / 'clips'}"
num_frames = 40
[sample]
enabled = true
[[sample.prompts]]
prompt = "[trigger] orbit 360"
''')
    return p


def test_validate_refuses_the_job_that_crashes_ai_toolkit(crash_job):
    """Run as a user would (a subprocess): exit 1 naming the three keys; torch never loads."""
    proc = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "validate", str(crash_job), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    keys = {f["key"] for f in out["findings"] if f["level"] == "error"}
    assert {"sample.prompts[0].ctrl_img", "datasets[0].num_frames", "job.trigger_word"} <= keys
    assert out["ok"] is False and out["errors"] == len([f for f in out["findings"] if f["level"] == "error"])


def test_validate_path_never_imports_torch(crash_job):
    code = ("import sys\nfrom wanlora.tui.cli import main\n"
            f"rc = main(['validate', {str(crash_job)!r}])\n"
            "assert rc == 1, rc\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers', 'peft', 'textual'))\n"
            "print('HEAVY', bad)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_validate_text_output_and_exit_codes(crash_job, tmp_path, capsys):
    assert main(["validate", str(crash_job)]) == 1
    out = capsys.readouterr().out
    assert "ERROR   datasets[0].num_frames" in out and "fix: use num_frames = 41" in out
    assert "job refused: 3 error(s)" in out
    assert main(["validate", str(tmp_path / "missing.toml")]) == 2
    ok = tmp_path / "ok.toml"
    ok.write_text(crash_job.read_text().replace("num_frames = 40", "num_frames = 41")
                  .replace('name = "crash"', 'name = "crash"\ntrigger_word = "orb"')
                  .replace("enabled = true", "enabled = false"))
    assert main(["validate", str(ok)]) == 0  # the prompt without ctrl_img is only a warning now
    assert "ok: 0 error(s), 1 warning(s)" in capsys.readouterr().out


def test_show_prints_each_value_with_its_origin(crash_job, capsys):
    assert main(["show", str(crash_job), "--preset", "motion"]) == 0
    out = capsys.readouterr().out
    lines: dict[str, str] = {}  # first occurrence: [[datasets]] comes before [sample]
    for line in out.splitlines():
        if "=" in line and not line.startswith("#"):
            lines.setdefault(line.split("=")[0].strip(), line)
    assert lines["num_frames"].endswith("# user")
    assert lines["timestep_type"].endswith("# recipe")
    assert lines["transformer"].endswith("# tier")
    assert lines["optimizer"].endswith("# default")
    assert main(["show", str(crash_job), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["origins"]["datasets[0].num_frames"] == "user" and data["tier"] == 80


def test_presets_lists_and_prints(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert all(w in out for w in ("motion", "style", "character", "141"))
    assert main(["presets", "character"]) == 0
    out = capsys.readouterr().out
    assert 'timestep_type = "sigmoid"' in out and "required" in out
    assert main(["presets", "24gb"]) == 0
    assert 'transformer = "nf4"' in capsys.readouterr().out
    assert main(["presets", "dance"]) == 2
    assert main(["presets", "motion", "--starter"]) == 0
    starter = tomllib.loads(capsys.readouterr().out)
    assert starter["job"]["preset"] == "motion" and starter["datasets"][0]["folder"]


def test_import_aitk_writes_a_job_that_validate_reads(tmp_path, capsys):
    out = tmp_path / "char.toml"
    assert main(["import-aitk", str(FIX / "aitk_character.yaml"), "-o", str(out), "--preset", "character"]) == 0
    text = out.read_text()
    assert "# Not imported:" in text and "training_folder" in text
    assert main(["import-aitk", str(FIX / "aitk_character.yaml"), "-o", str(out)]) == 2  # no silent overwrite
    capsys.readouterr()
    assert main(["validate", str(out), "--json"]) == 1
    keys = {f["key"] for f in json.loads(capsys.readouterr().out)["findings"] if f["level"] == "error"}
    assert {"sample.prompts[1].ctrl_img", "datasets[0].folder"} <= keys


def test_estimate_reports_vram_time_and_its_source(crash_job, capsys):
    assert main(["estimate", str(crash_job), "--gpu", "NVIDIA H100 80GB HBM3"]) == 0
    out = capsys.readouterr().out
    assert "peak VRAM" in out and "s/step" in out and "source:" in out and "guide's ai-toolkit" in out
    assert main(["estimate", str(crash_job), "--tier", "24", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tier"] == 24 and data["need_gib"] <= data["budget_gib"]
    assert data["source"].startswith(("built-in", "calibrated"))
