"""``wanlora demo`` end to end on the CPU: clips, tiny model, both experts, a loadable pair, where it all is."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_wanlora_demo_trains_a_pair_and_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from wanlora.engine.config import jobdir
    from wanlora.tui.cli import main

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["demo", "--home", str(tmp_path), "--steps", "10"]) == 0
    # offline only while the demo runs: left set, it made every later hub-id job in the process "not cached"
    import os

    assert "HF_HUB_OFFLINE" not in os.environ
    out = capsys.readouterr().out
    job = tmp_path / "demo" / "job"
    high = job / "checkpoints" / "wanlora_demo_high_noise.safetensors"
    low = job / "checkpoints" / "wanlora_demo_low_noise.safetensors"
    assert high.is_file() and low.is_file()
    assert str(high) in out and str(low) in out and "10 steps" in out
    assert (tmp_path / "models" / "tiny-wan22-i2v" / "model_index.json").is_file()
    steps = [e for e in jobdir.read_events(job) if e["type"] == "step"]
    assert {e["expert"] for e in steps} == {"high_noise", "low_noise"}
    # a second demo starts fresh instead of "resuming" a finished run
    assert main(["demo", "--home", str(tmp_path), "--steps", "4"]) == 0
    assert len([e for e in jobdir.read_events(job) if e["type"] == "step"]) == 4
