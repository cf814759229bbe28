"""Turn measured GPU runs into ``presets/calibration.toml`` and check ``wanlora estimate`` against them.

    python bench/calibrate.py            # write presets/calibration.toml, print estimate-vs-measured errors
    python bench/calibrate.py --check    # only print the errors

Inputs are the JSON lines in ``bench/results/`` written by ``bench/step.py`` and ``bench/memory_tiers.py``.
Step rows of the trainer's own configuration (fp8 base, per-block compile, selective checkpointing that keeps
attention) become ``[[step]]`` rows; every measured row with a fully determined configuration is then
estimated by ``engine.estimate`` and compared: step time within ±15 % (leave-one-out: each bucket is
estimated from the *other* buckets' rows), peak VRAM within ±10 % (targets of issue 7).  Memory is compared where the run did not fill spare memory on purpose (selective checkpointing
uses whatever is free, so its peak says nothing about what the job needs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from wanlora.engine.config.launch import use_trainer_env  # noqa: E402

use_trainer_env()  # the trainer's allocator setting (expandable segments) and NVLink multicast off

RESULTS = ROOT / "bench" / "results"
TRAINER_VARIANT = "compile_fp8_sel_sac"


def rows(pattern: str) -> list[dict]:
    out = []
    for p in sorted(RESULTS.glob(pattern)):
        for line in p.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if "error" not in r:
                    out.append(r)
    return out


def job_for(frames: int, h: int, w: int, **sections):
    """A job whose single bucket has the measured shape's area (480x832 → resolution 640, as a user's
    16:9 clips at resolution 640 would be bucketed)."""
    from wanlora.engine.config.presets import resolve

    res = 16 * round((h * w) ** 0.5 / 16)
    user = {"job": {"vram_tier": 80}, "datasets": [{"folder": "/x", "num_frames": frames, "resolutions": [res],
                                                     "cache_latents": True}],
            "training": {"cache_text_embeddings": True}}
    for k, v in sections.items():
        user.setdefault(k, {}).update(v)
    job = resolve(user, tier=None).job
    return job


def write_calibration(step_rows: list[dict], path: Path) -> int:
    lines = ["# Written by bench/calibrate.py from bench/results/ (measured, not edited by hand).",
             "# One row per measured bucket: the trainer's own configuration on that GPU.", ""]
    n = 0
    for r in step_rows:
        if r["variant"] != TRAINER_VARIANT:
            continue
        f, h, w = (int(v) for v in r["shape"].split("x"))
        lines += ["[[step]]", f'gpu = "{r["gpu"]}"', f"num_frames = {f}", f"width = {w}", f"height = {h}",
                  f"s_per_step = {r['s_per_step']}", 'transformer = "fp8"', "compile = true",
                  "rank = 16", f"batch_size = {r.get('batch', 1)}", "gradient_checkpointing = true",
                  f"peak_gib = {r.get('peak_alloc_gib')}", f'measured = "{r.get("torch", "")}"', ""]
        n += 1
    path.write_text("\n".join(lines))
    return n


def check(step_rows: list[dict], tier_rows: list[dict]) -> list[tuple[str, str, float, float, float]]:
    """(what, metric, measured, estimated, error) for every comparable measurement."""
    from wanlora.engine.estimate import load_calibration, peak_vram, step_time

    cal = load_calibration()
    out = []
    for r in step_rows:
        f, h, w = (int(v) for v in r["shape"].split("x"))
        v = r["variant"]
        sections = {"quantization": {"transformer": "fp8" if "fp8" in v else "none"},
                    "advanced": {"compile": "compile" in v}, "multistage": {"high_noise": True, "low_noise": False}}
        job = job_for(f, h, w, **sections)
        if v == TRAINER_VARIANT:  # leave this bucket's own row out: the estimate must interpolate
            others = [c for c in cal if (c["num_frames"], c["height"], c["width"]) != (f, h, w)]
            est = step_time(job, gpu_name=r["gpu"], calibration=others).s_per_step
            out.append((f"{v} {r['shape']}", "s/step", r["s_per_step"], est, est / r["s_per_step"] - 1))
        if "sel" not in v and r.get("peak_alloc_gib"):
            est = peak_vram(job).peak_gib
            out.append((f"{v} {r['shape']}", "peak GiB", r["peak_alloc_gib"], est, est / r["peak_alloc_gib"] - 1))
    for r in tier_rows:
        f, h, w = (int(v) for v in r["shape"].split("x"))
        if r["bench"] == "tier24":
            job = job_for(f, h, w, model={"low_vram": True}, quantization={"transformer": "nf4"},
                          advanced={"compile": False})
        else:
            job = job_for(f, h, w, model={"layer_offloading": r["layer_offloading"]},
                          quantization={"transformer": "fp8"}, advanced={"compile": False},
                          multistage={"high_noise": True, "low_noise": False})
        est = peak_vram(job).peak_gib
        out.append((r["bench"], "peak GiB", r["peak_alloc_gib"], est, est / r["peak_alloc_gib"] - 1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="do not rewrite presets/calibration.toml")
    a = ap.parse_args()
    step_rows = rows("*-h100-*.jsonl")
    # one expert per step row: with both experts resident the planner has less spare memory (+1-3 %, see
    # BENCHMARKS.md), which is inside the estimate's tolerance
    step_rows = [r for r in step_rows if "variant" in r and r.get("gpu", "").startswith("NVIDIA H100")
                 and r.get("experts", 1) == 1]
    tier_rows = [r for r in rows("*-tiers.jsonl") if "bench" in r]
    if not a.check:
        n = write_calibration(step_rows, ROOT / "presets" / "calibration.toml")
        print(f"wrote presets/calibration.toml ({n} rows)")
    worst = {"s/step": 0.0, "peak GiB": 0.0}
    print(f"{'measurement':<36}{'metric':<10}{'measured':>10}{'estimate':>10}{'error':>8}")
    for what, metric, meas, est, err in check(step_rows, tier_rows):
        worst[metric] = max(worst[metric], abs(err))
        print(f"{what:<36}{metric:<10}{meas:>10.2f}{est:>10.2f}{err:>+8.1%}")
    print(f"worst: step time {worst['s/step']:.1%} (target 15 %), peak VRAM {worst['peak GiB']:.1%} (target 10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
