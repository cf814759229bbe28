"""Issue #14 points 2 and 9: progress on screen (logs -f, demo), noise filtered, Ctrl-C is not a failure,
and the model-download fix names the installed `hf` command and where the ~70 GB go."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOISE = [
    "[transformers] `CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil`",
    "Writing model shards: 100%|██████████| 1/1 [00:00<00:00, 626.30it/s]",
    "Loading checkpoint shards:  50%|█████     | 1/2 [00:01<00:01,  1.2s/it]",
]


def _job(home: Path) -> Path:
    d = home / "jobs" / "1"
    d.mkdir(parents=True)
    (d / "job.toml").write_text('[job]\nname = "j"\n')
    (d / "train.log").write_text("[wanlora daemon 2026-12-01 10:00:00] started (pid 5)\n" + "\n".join(NOISE) + "\n")
    evs = [{"v": 1, "seq": i + 1, "ts": 1.0, "type": "step", "step": i + 1, "total_steps": 10, "loss": 0.5 / (i + 1),
            "expert": "high_noise", "s_per_step": 2.5, "eta_s": 90 - 10 * i} for i in range(3)]
    evs.append({"v": 1, "seq": 4, "ts": 1.0, "type": "checkpoint", "step": 3, "files": ["/x/j_high_noise_000003.safetensors"],
                "final": False})
    (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))
    return d


def test_logs_shows_where_the_run_is_and_drops_library_noise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wanlora.tui.cli import main

    _job(tmp_path)
    assert main(["logs", "1", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "started (pid 5)" in out
    assert "step 3/10  loss 0.1667  high_noise  2.5 s/step  ETA 1m10s" in out
    assert not any(n[:30] in out for n in NOISE)
    assert main(["logs", "1", "--home", str(tmp_path), "-f"]) == 0  # the job is not active: prints and returns
    out = capsys.readouterr().out
    assert "checkpoint at step 3: j_high_noise_000003.safetensors" in out and "requires torchvision" not in out
    assert main(["logs", "1", "--home", str(tmp_path), "--raw"]) == 0
    assert "requires torchvision" in capsys.readouterr().out


def test_demo_shows_steps_and_ctrl_c_exits_130_without_failing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "wanlora.tui.cli", "demo", "--home", str(tmp_path), "--steps", "500"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env,
                         start_new_session=True)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 240
        assert p.stdout is not None
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.strip().startswith("step 2/500"):
                os.kill(p.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process
                break
        rest, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    out = "".join(seen) + rest
    assert any(ln.strip().startswith("step 1/500  loss ") and "s/step  ETA" in ln for ln in seen), out
    assert p.returncode == 130, out
    assert "stopped by Ctrl-C" in out and "demo failed" not in out and "Traceback" not in out


def test_download_hint_names_hf_and_hf_home(monkeypatch: pytest.MonkeyPatch) -> None:
    from wanlora.engine.model.folder import ModelLoadError, resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nowhere/hf")
    with pytest.raises(ModelLoadError) as e:
        resolve_model_path("Wan-AI/Not-A-Real-Model-Diffusers", ["transformer"])
    msg = str(e.value)
    assert "`hf download Wan-AI/Not-A-Real-Model-Diffusers" in msg and "huggingface-cli" not in msg
    assert "HF_HOME" in msg and "/nowhere/hf" in msg and "/workspace" in msg


def test_logs_follow_prints_what_is_written_while_the_job_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """-f on a running job: new log lines (noise dropped, a half-written line held back until it ends) and new
    step lines, then it returns once the job stops, after printing what was written before it stopped."""
    from wanlora.tui.cli import main
    from wanlora.tui.commands import logs

    d = _job(tmp_path)
    polls = iter([True, True, False])
    monkeypatch.setattr(logs, "_active", lambda home, job_id, job_dir: next(polls))
    writes = iter([("resumed at step 3\n" + NOISE[1] + "\npartial ", None),
                   ("line ends\n", {"v": 1, "seq": 5, "ts": 1.0, "type": "step", "step": 4, "total_steps": 10,
                                    "loss": 0.25, "expert": "low_noise", "s_per_step": 2.5, "eta_s": 15})])

    def sleep(_: float) -> None:  # between polls, the trainer writes
        text, ev = next(writes)
        with open(d / "train.log", "a") as f:
            f.write(text)
        if ev:
            with open(d / "events.jsonl", "a") as f:
                f.write(json.dumps(ev) + "\n")

    monkeypatch.setattr(logs.time, "sleep", sleep)
    assert main(["logs", "1", "--home", str(tmp_path), "-f"]) == 0
    out = capsys.readouterr().out.splitlines()
    after = out[out.index(next(ln for ln in out if "checkpoint at step 3" in ln)) + 2:]  # past the tail + step 3
    assert after[0] == "resumed at step 3"
    assert "step 4/10" in after[1] and "low_noise" in after[1]
    assert after[2:] == ["partial line ends"]
    assert not any("Writing model shards" in ln for ln in out)
