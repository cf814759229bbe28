"""BENCHMARKS.md's tier matrix from one ``bench/tier_matrix.py OUT`` run: does each cell fit, how fast, and how
far ``wanlora estimate`` was from it.

    python3 bench/tier_table.py OUT [OUT2 ...]

Per cell: fits (every bucket of both experts, the switch back and the preview ran with no out-of-memory and at
most 92 % reserved), peak reserved (GiB and % of the card it acted as), s/step per bucket, projected hours, and
the estimate's error on s/step per bucket and on peak reserved.  The estimate of a cell is calibrated from the
*other* cells' measurements (leave-one-out), so an error here is what a user's estimate would be off by, not
a fit to itself.  The eager rows are plain diffusers + peft (bench/step.py) from the same run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cal_rows(exclude: Path, reports: list[tuple[Path, dict]]) -> list[dict]:
    """Calibration rows: presets/calibration.toml's plus every other cell's expert steps (not ``exclude``'s)."""
    from wanlora.engine.estimate import load_calibration

    from bench.calibrate import report_rows

    extra = []
    for p, r in reports:
        if p != exclude:
            for row in report_rows(p, r):
                f, h, w = (int(v) for v in row["shape"].split("x"))
                extra.append({**row, "num_frames": f, "height": h, "width": w, "rank": 16})
    own = {str(exclude)}
    return [r for r in load_calibration() if r.get("source") not in own] + extra


def cell_row(p: Path, r: dict, reports: list[tuple[Path, dict]]) -> dict:
    """One cell's measured figures and the estimate's errors."""
    from wanlora.engine.config.presets import resolve_file
    from wanlora.engine.estimate import peak_vram, step_time

    job_path = p.parent / "jobs" / (p.stem.removeprefix("cell_") + ".toml")
    # the card it acted as: the cap, or the real card where a cap is larger (141 on an H200 of 140.4 GiB)
    card = r.get("vram_total_gib") or r.get("vram_gib")
    res = resolve_file(job_path, detected_vram_gb=card)
    job = res.job
    buckets = [b for b in r["buckets"] if "s_per_step" in b]
    ooms = [b["bucket"] for b in r["buckets"] if "oom" in b]
    reserved = max([b.get("peak_reserved_gib", 0) for b in buckets] + [(r.get("preview") or {}).get("peak_reserved_gib", 0)])
    fits = not ooms and r.get("memory_ok") is not False and bool(buckets) and reserved <= 0.92 * card
    est_t = step_time(job, gpu_name=r["gpu"], tier=res.tier, calibration=_cal_rows(p, reports), budget_gib=card)
    est_m = peak_vram(job, card)
    by_tok = {b.tokens: b for b in est_t.buckets}
    errs = []
    for b in buckets:
        e = by_tok.get(b["tokens"])
        if e is None:  # a 16:9 bucket: the estimate plans square buckets of the same resolution
            e = min(est_t.buckets, key=lambda x: abs(x.tokens - b["tokens"]))
        errs.append(e.s_per_step / b["s_per_step"] - 1)
    switch = [b["switch_s"] for b in buckets if b.get("switch_s") is not None]
    return {
        "cell": p.stem.removeprefix("cell_"), "tier": res.tier, "card": card, "fits": fits, "oom": ooms,
        "reserved_gib": reserved, "reserved_pct": 100 * reserved / card if card else None,
        "s_per_step": {b["bucket"]: b["s_per_step"] for b in buckets},
        "experts": {b["bucket"]: {n: e["s_per_step"] for n, e in b["experts"].items()} for b in buckets},
        "switch_s": max(switch) if switch else None, "preview_s": (r.get("preview") or {}).get("s"),
        "hours": (r.get("projection") or {}).get("total_h"), "attention": r["plan"].get("attention"),
        "quant": r["plan"]["quantization"], "est_s_err": errs,
        "est_reserved_gib": est_m.reserved_gib, "est_reserved_err": est_m.reserved_gib / reserved - 1 if reserved else None,
        "est_hours": est_t.hours, "gpu": r["gpu"],
    }


def cell_runs(outs: list[Path]) -> dict[str, dict]:
    """``cells.jsonl``'s rows by cell (the last one of each): rc, wall time, shared GPU, covered by."""
    runs: dict[str, dict] = {}
    for out in outs:
        if (out / "cells.jsonl").exists():
            for line in (out / "cells.jsonl").read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    runs[row["cell"]] = row
    return runs


def load(outs: list[Path]) -> tuple[list[dict], dict[str, float]]:
    reports = []
    for out in outs:
        for p in sorted(out.glob("cell_*.json")):
            text = p.read_text().strip()
            if text:
                reports.append((p, json.loads(text)))
    eager: dict[str, float] = {}
    for out in outs:
        f = out / "step_eager.jsonl"
        if f.exists():
            for line in f.read_text().splitlines():
                row = json.loads(line)
                if row.get("s_per_step"):
                    eager[row["shape"]] = row["s_per_step"]
    runs = {c.replace(":", "_"): row for c, row in cell_runs(outs).items()}
    rows = []
    for p, r in reports:
        row = cell_row(p, r, reports)
        row["shared_gpu_with"] = runs.get(row["cell"], {}).get("shared_gpu_with", [])
        row["wall_s"] = runs.get(row["cell"], {}).get("wall_s")
        if row["shared_gpu_with"]:  # its steps shared the GPU: no clean time to hold the estimate to
            row["est_s_err"] = []
        rows.append(row)
    return rows, eager


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.0%}"


def markdown(rows: list[dict], eager: dict[str, float], failed: list[str], covered: dict[str, str] | None = None) -> str:
    out = ["| cell (tier:recipe:clips:mode) | GPU, card | fits | peak reserved | s/step per bucket (vs eager) | switch s | "
           "preview s | projected h | estimate error s/step | estimate error reserved |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for c in rows:
        shared = bool(c.get("shared_gpu_with"))
        steps = ", ".join(f"{k} {v:.2f}" + (f" ({v / eager[k] - 1:+.0%})" if k in eager and not shared else "")
                          for k, v in c["s_per_step"].items()) + (" (GPU shared: fit only)" if shared else "")
        out.append(f"| {c['cell'].replace('_', ':', 3)} | {c['gpu'].replace('NVIDIA ', '')}, {c['card']:g} GiB | "
                   f"{'yes' if c['fits'] else 'NO ' + ','.join(c['oom'])} | {c['reserved_gib']:.1f} GiB "
                   f"({c['reserved_pct']:.0f} %) | {steps or '—'} | {c['switch_s'] if c['switch_s'] is not None else '—'} | "
                   f"{c['preview_s'] if c['preview_s'] is not None else '—'} | {c['hours'] if c['hours'] is not None else '—'} | "
                   f"{', '.join(_pct(e) for e in c['est_s_err']) or '—'} | {_pct(c['est_reserved_err'])} |")
    for f in failed:
        out.append(f"| {f} | | did not finish (see its log) | | | | | | | |")
    for c, by in (covered or {}).items():
        out.append(f"| {c} | | shown by {by}'s run (same memory plan, its buckets and preview included) | | | | | | | |")
    if eager:
        out.append("")
        out.append("Plain diffusers + peft, eager bf16, same run: " + ", ".join(f"{k} {v:.2f} s" for k, v in eager.items()))
    return "\n".join(out)


def main(argv: list[str]) -> int:
    outs = [Path(a) for a in argv] or [Path("tier_matrix")]
    rows, eager = load(outs)
    runs = cell_runs(outs)
    failed = [f"{c} (rc {r.get('rc')})" for c, r in runs.items() if "covered_by" not in r and r.get("rc") != 0
              and not any(row["cell"] == c.replace(":", "_") for row in rows)]
    covered = {c: r["covered_by"] for c, r in runs.items() if "covered_by" in r}
    print(markdown(rows, eager, failed, covered))
    (outs[0] / "table.json").write_text(json.dumps({"rows": rows, "eager": eager}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
