"""``wanlora trial`` on the CPU: the real Trainer path on the tiny architecture, a per-bucket report, and not
one byte written into the job's folders (job folder, dataset folder, home)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def _trial(args: list[str], home: Path, tmpdir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANLORA_HOME": str(home), "TMPDIR": str(tmpdir), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "trial", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=500)


def test_trial_reports_every_bucket_and_writes_nothing_into_the_job(tmp_path: Path) -> None:
    from wanlora.engine.config import jobdir
    from wanlora.engine.config.io import load_job, save_job
    from wanlora.engine.data.synthetic import write_clips
    from wanlora.engine.train.demo import prepare_demo

    home, tmpdir = tmp_path / "home", tmp_path / "tmp"
    tmpdir.mkdir()
    job_dir = prepare_demo(home, steps=300)
    job = load_job(job_dir / jobdir.JOB_TOML)
    clips = Path(job.datasets[0].folder)
    # two buckets (64 and 96), cached latents + text (caching must not land beside the clips), one preview
    write_clips(clips, n=2, num_frames=24, size=(96, 96), fps=16.0, prefix="big")
    first = tmp_path / "first.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(first)
    d = job.model_dump()
    d["datasets"][0].update(resolutions=[64, 96], cache_latents=True)
    d["training"]["cache_text_embeddings"] = True
    d["sample"].update(enabled=True, every=100, width=64, height=64, num_frames=9, steps=2,
                       prompts=[{"prompt": "a red square", "ctrl_img": str(first)},
                                {"prompt": "a blue square", "ctrl_img": str(first)}])
    save_job(type(job).model_validate(d), job_dir / jobdir.JOB_TOML)
    before = _tree(job_dir, clips, home)

    r = _trial([str(job_dir), "--steps", "1", "--json", "--profile"], home, tmpdir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tiny Wan 2.2 architecture on the CPU" in r.stderr  # says what it measured
    assert re.search(r"trial \[ *[0-9.]+ s\]: ", r.stderr)  # progress on screen while it runs, seconds since start
    rep = json.loads(r.stdout)

    assert _tree(job_dir, clips, home) == before, "the trial wrote into the job's, the dataset's or the home's folders"
    assert list(tmpdir.iterdir()) == [], "the trial's temporary folder was left behind"
    assert rep["architecture"] == "tiny" and rep["wrote_to_job"] is False and rep["job"] == "wanlora_demo"
    labels = [b["bucket"] for b in rep["buckets"]]
    assert sorted(labels) == ["9x64x64", "9x96x96"]
    for b in rep["buckets"]:
        assert b["tokens"] == 3 * (int(b["bucket"].split("x")[1]) // 16) ** 2  # (9-1)/4+1 latent frames
        assert set(b["experts"]) == {"high_noise", "low_noise"}
        for e in b["experts"].values():
            assert len(e["warmup_s"]) == 1 and e["s_per_step"] > 0
        assert b["switch_s"] is not None and b["oom_fallback"] is False
    assert abs(sum(b["share"] for b in rep["buckets"]) - 1) < 1e-6
    assert set(rep["plan"]["experts"]) == {"high_noise", "low_noise"}
    for ex in rep["plan"]["experts"].values():  # one checkpoint plan per bucket
        assert sorted(b["tokens"] for b in ex["buckets"]) == sorted(b["tokens"] for b in rep["buckets"])
    for b in rep["buckets"]:  # --profile: where the profiled step's time went
        p = b["profile"]
        assert p["kinds_s"]["matmul"] > 0 and p["kinds_s"]["attention"] > 0, p
        assert abs(sum(p["kinds_s"].values()) - p["busy_s"]) < 1e-3 and p["wall_s"] > 0
        assert all(e["plan"]["planned_for_tokens"] == b["tokens"] for e in b["experts"].values())
    c = rep["caching"]
    n = len(list(clips.glob("*.mp4")))  # the demo's clips and the two big ones
    # every clip at both resolutions, each in all its fixed 16 fps windows (the demo samples frames at "fps")
    assert n >= 6 and c["clips"] == n and c["latents_computed"] == c["latents_total"] >= n * 2
    assert rep["checkpoint_mib"] > 0 and rep["preview"]["files"] == 1  # one preview, though the job has two
    # the projection, recomputed here from the report's own measurements
    pr = rep["projection"]
    mean = sum(b["share"] * b["s_per_step"] for b in rep["buckets"])
    assert abs(pr["mean_s_per_step"] - mean) < 1e-3 and pr["steps"] == 300
    assert abs(pr["train_h"] - 300 * mean / 3600) < 2e-3
    assert abs(pr["previews_h"] - 3 * 2 * rep["preview"]["s"] / 3600) < 2e-3  # 300/100 previews x 2 prompts
    assert pr["switches"] == 300 // 5 - 1  # demo switches every 5 steps
    parts = [k for k in pr if k.endswith("_h") and k != "total_h"]
    assert abs(pr["total_h"] - sum(pr[k] for k in parts)) < 0.02


def test_trial_of_a_broken_job_is_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[job]\nname = "x"\n[[datasets]]\nfolder = "/nonexistent/clips"\nbogus_key = 1\n')
    r = _trial([str(bad)], tmp_path / "home", tmp_path)
    assert r.returncode == 1
    assert "bogus_key" in r.stderr and "Traceback" not in r.stderr
