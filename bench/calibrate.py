"""Turn measured GPU runs into ``presets/calibration.toml`` and check ``wanlora estimate`` against them.

    python bench/calibrate.py            # write presets/calibration.toml, print estimate-vs-measured errors
    python bench/calibrate.py --check    # only print the errors

Inputs are the JSON lines in ``bench/results/`` written by ``bench/step.py`` and ``bench/memory_tiers.py``, and
the ``wanlora trial --json`` reports there (``trial_*.json``: the product's own path).  Step rows of the
trainer's own configuration (fp8 base, per-block compile, selective checkpointing that keeps attention) and
every one-expert trial bucket (its quantisation and compile as run; of repeated runs the fastest) become
``[[step]]`` rows; every measured row with a fully determined configuration is then
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


def trial_reports() -> list[tuple[Path, dict]]:
    """Every ``wanlora trial --json`` report under bench/results/ (an empty file: a trial that crashed):
    ``trial_*.json``, and ``cell_*.json`` from bench/tier_matrix.py (a trial of a job as a user writes it)."""
    out = []
    for p in sorted([*RESULTS.rglob("trial_*.json"), *RESULTS.rglob("cell_*.json")]):
        text = p.read_text().strip()
        if text:
            out.append((p, json.loads(text)))
    return out


def report_rows(p: Path, r: dict) -> list[dict]:
    """Every expert's timed steps in every measured bucket of one ``wanlora trial --json`` report, with the
    checkpoint plan it ran under (so the estimate counts the same recompute) and whether DOP ran."""
    plan = r.get("plan") or {}
    if r.get("architecture") != "full" or r.get("plan_forced") or plan.get("layer_offloading"):
        return []
    dop = bool(r.get("dop"))
    out = []
    for b in r.get("buckets", []):
        if "s_per_step" not in b or b.get("oom_fallback"):
            continue
        batch = round(b["samples_per_s"] * b["s_per_step"]) if b.get("samples_per_s") else 1
        for e in b.get("experts", {}).values():
            ep = e.get("plan") or {}
            if "checkpointed_blocks" not in ep:
                continue
            out.append({"gpu": r["gpu"], "shape": b["bucket"], "s_per_step": e["s_per_step"],
                        "transformer": plan["quantization"], "compile": bool(plan["compile"]),
                        "checkpointed_blocks": ep["checkpointed_blocks"], "saved_attention": ep["saved_attention"],
                        "dop": dop, "batch_size": batch, "attention": plan.get("attention") or "", "peak_alloc_gib": b.get("peak_alloc_gib"),
                        "card_gib": r.get("vram_total_gib"),  # the card it planned on (a --vram-gib cap included)
                        "torch": r.get("torch", ""), "source": str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)})
    return out


def trial_rows(exclude: Path | None = None) -> list[dict]:
    """Rows from every ``wanlora trial --json`` report under bench/results/ (but ``exclude``), as
    ``[[step]]`` fields; repeated runs of one configuration and plan count once, at the fastest."""
    out = [row for p, r in trial_reports() if p != exclude for row in report_rows(p, r)]
    best: dict[tuple, dict] = {}
    for row in out:
        key = (row["gpu"], row["shape"], row["transformer"], row["compile"], row["checkpointed_blocks"],
               row["saved_attention"], row["dop"], row["batch_size"])
        if key not in best or row["s_per_step"] < best[key]["s_per_step"]:
            best[key] = row
    return list(best.values())


def guide_reports() -> list[dict]:
    """Two-expert ``wanlora trial`` reports with a projection (the guide's runs): measured mean s/step."""
    out = []
    for p, r in trial_reports():
        plan, pr = r.get("plan") or {}, r.get("projection") or {}
        if r.get("architecture") == "full" and len(plan.get("experts", {})) == 2 and pr.get("mean_s_per_step"):
            buckets = [tuple(int(v) for v in b["bucket"].split("x")) for b in r["buckets"] if "s_per_step" in b]
            out.append({"gpu": r["gpu"], "name": p.parent.name + "/" + p.stem, "buckets": buckets,
                        "transformer": plan["quantization"], "compile": bool(plan["compile"]),
                        "s_per_step": pr["mean_s_per_step"], "card_gib": r.get("vram_total_gib")})
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


def write_calibration(step_rows: list[dict], path: Path, trials: list[dict] | None = None) -> int:
    lines = ["# Written by bench/calibrate.py from bench/results/ (measured, not edited by hand).",
             "# One row per measured bucket: the trainer's own configuration on that GPU (bench/step.py), or a",
             "# `wanlora trial` expert step as run (transformer, compile, the checkpoint plan it ran under, DOP; the",
             "# fastest of repeated runs).", ""]
    n = 0
    for r in trials or []:
        f, h, w = (int(v) for v in r["shape"].split("x"))
        lines += ["[[step]]", f'gpu = "{r["gpu"]}"', f"num_frames = {f}", f"width = {w}", f"height = {h}",
                  f"s_per_step = {r['s_per_step']}", f'transformer = "{r["transformer"]}"',
                  f"compile = {'true' if r['compile'] else 'false'}", "rank = 16", f"batch_size = {r['batch_size']}",
                  "gradient_checkpointing = true", f"checkpointed_blocks = {r['checkpointed_blocks']}",
                  f"saved_attention = {r['saved_attention']}", f"dop = {'true' if r['dop'] else 'false'}",
                  f"peak_gib = {r.get('peak_alloc_gib')}",
                  f'attention = "{r["attention"]}"', f'measured = "{r["torch"]}"', f'source = "{r["source"]}"', ""]
        n += 1
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


def check(step_rows: list[dict], tier_rows: list[dict],
          trials: list[dict] | None = None) -> list[tuple[str, str, float, float, float]]:
    """(what, metric, measured, estimated, error) for every comparable measurement."""
    from wanlora.engine.estimate import load_calibration, peak_vram, step_time

    cal = load_calibration()
    out = []
    for g in guide_reports():  # the whole job's mean step (both experts, every bucket) from the calibration
        f = g["buckets"][0][0]
        job = job_for(f, 512, 512, quantization={"transformer": g["transformer"]}, advanced={"compile": g["compile"]})
        job.datasets[0].resolutions = sorted({h for _, h, _ in g["buckets"]})
        # planned on the card the run had: on the H200 the guide keeps far more than an 80 GB card would
        est = step_time(job, gpu_name=g["gpu"], calibration=cal, budget_gib=g["card_gib"]).s_per_step
        out.append((f"guide {g['name']}", "s/step", g["s_per_step"], est, est / g["s_per_step"] - 1))
    for r in trials or []:  # leave-one-out, as below: the other buckets measured on this GPU
        f, h, w = (int(v) for v in r["shape"].split("x"))
        job = job_for(f, h, w, quantization={"transformer": r["transformer"]}, advanced={"compile": r["compile"]},
                      multistage={"high_noise": True, "low_noise": False},
                      training={"batch_size": r["batch_size"], "dop": {"enabled": r["dop"]}})
        others = [c for c in cal if not (c["gpu"] == r["gpu"] and (c["num_frames"], c["height"], c["width"]) == (f, h, w))]
        est = step_time(job, gpu_name=r["gpu"], calibration=others, budget_gib=r["card_gib"]).s_per_step
        what = f"trial {r['transformer']} {r['attention']} {r['shape']}".replace('  ', ' ')
        out.append((what, "s/step", r["s_per_step"], est, est / r["s_per_step"] - 1))
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
    trials = trial_rows()
    if not a.check:
        n = write_calibration(step_rows, ROOT / "presets" / "calibration.toml", trials)
        print(f"wrote presets/calibration.toml ({n} rows)")
    worst = {"s/step": 0.0, "peak GiB": 0.0}
    print(f"{'measurement':<40}{'metric':<10}{'measured':>10}{'estimate':>10}{'error':>8}")
    for what, metric, meas, est, err in check(step_rows, tier_rows, trials):
        worst[metric] = max(worst[metric], abs(err))
        print(f"{what:<40}{metric:<10}{meas:>10.2f}{est:>10.2f}{err:>+8.1%}")
    print(f"worst: step time {worst['s/step']:.1%} (target 15 %), peak VRAM {worst['peak GiB']:.1%} (target 10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
