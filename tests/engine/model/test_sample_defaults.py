"""``wanlora sample`` at its default size (768², 41 frames) on the demo pair: a clip, not a traceback.

Issue #14 point 1: the tiny model's rotary table stopped at 32 patches per side, so any preview wider than
512 px crashed inside the transformer with ``shape '[1, 48, 1, -1]' is invalid for input of size 128``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def test_sample_at_default_size_on_the_demo_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import decord
    from PIL import Image
    from wanlora.tui.cli import main

    assert main(["demo", "--home", str(tmp_path), "--steps", "2"]) == 0
    ck = tmp_path / "demo" / "job" / "checkpoints"
    first = tmp_path / "first.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(first)
    capsys.readouterr()
    # defaults for size: --width 768 --height 768 --frames 41 (only the denoising steps are cut for speed)
    code = main(["sample", str(ck / "wanlora_demo_high_noise.safetensors"), str(ck / "wanlora_demo_low_noise.safetensors"),
                 "--image", str(first), "--prompt", "a red square moving right", "--steps", "2", "--cpu"])
    out = capsys.readouterr()
    assert code == 0, out.err
    mp4 = ck / "samples" / "000002_0.mp4"
    assert str(mp4) in out.out
    vr = decord.VideoReader(str(mp4))
    assert len(vr) == 41 and vr[0].shape == (768, 768, 3)
    assert "denoising" in out.err  # progress on screen while it runs


def test_outdated_tiny_model_is_rebuilt(tmp_path: Path) -> None:
    import json

    from wanlora.engine.model.tiny import build_tiny_model, ensure_tiny_model, is_current

    path = build_tiny_model(tmp_path / "tiny")
    assert is_current(path)
    cfg = path / "transformer" / "config.json"
    old = json.loads(cfg.read_text())
    old["rope_max_seq_len"] = 32  # what builds before the fix wrote
    cfg.write_text(json.dumps(old))
    assert not is_current(path)
    ensure_tiny_model(path)
    assert json.loads(cfg.read_text())["rope_max_seq_len"] == 1024


def test_trials_started_together_build_the_tiny_model_once(tmp_path: Path, monkeypatch) -> None:
    """Side-by-side trials (bench/tier_matrix.py's fit cells) all ask for the tiny model at start: one builds it,
    the others wait and find it current.  Two builders each removed the folder the other had just put there."""
    import threading
    import time

    from wanlora.engine.model import tiny

    path = tmp_path / "tiny"
    builds: list[int] = []

    def slow_build(p: Path, seed: int = 0) -> Path:  # stands in for the real build (seconds of model writing)
        builds.append(1)
        time.sleep(0.3)
        (p / "ok").parent.mkdir(parents=True, exist_ok=True)
        (p / "ok").write_text("built")
        return p

    monkeypatch.setattr(tiny, "build_tiny_model", slow_build)
    monkeypatch.setattr(tiny, "is_current", lambda p: (Path(p) / "ok").is_file())
    threads = [threading.Thread(target=tiny.ensure_tiny_model, args=(path,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and (path / "ok").read_text() == "built"
