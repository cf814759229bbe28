"""BENCHMARKS.md's rows from one ``bench/trial_suite.sh OUT`` run: every trial's buckets against the eager
baseline measured in the same run, and each guide job's projection.

    python3 bench/trial_table.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def eager_baseline(out: Path) -> dict[str, float]:
    """bench/step.py's eager s/step per shape ("41x512x512"), from ``step.jsonl`` (or ``step_eager.jsonl``)."""
    rows: dict[str, float] = {}
    for name in ("step.jsonl", "step_eager.jsonl"):
        p = out / name
        if p.exists():
            for line in p.read_text().splitlines():
                r = json.loads(line)
                if r.get("variant") == "eager" and r.get("s_per_step"):
                    rows[r["shape"]] = float(r["s_per_step"])
    return rows


def rows(out: Path) -> list[str]:
    """One markdown row per trial bucket, then one per projection."""
    eager = eager_baseline(out)
    lines = ["| trial | bucket | s/step | vs eager | plan (ckpt/keep attn) | reserved | attention / matmul / glue s | warm-up s |",
             "|---|---|---|---|---|---|---|---|"]
    proj = []
    for p in sorted(out.glob("trial_*.json")):
        text = p.read_text().strip()
        if not text:
            lines.append(f"| {p.stem[6:]} | — | failed: see {p.stem}.log | | | | | |")
            continue
        r = json.loads(text)
        for b in r["buckets"]:
            if "s_per_step" not in b:
                continue
            ex = next(iter(b["experts"].values()))
            plan = ex["plan"]
            base = eager.get(b["bucket"])
            ratio = f"{base / b['s_per_step']:.2f}×" if base else "—"
            prof = b.get("profile") or {}
            kinds = prof.get("kinds_s", {})
            split = " / ".join(f"{kinds.get(k, 0):.3f}" for k in ("attention", "matmul", "fused")) if kinds else "—"
            lines.append(f"| {p.stem[6:]} | {b['bucket']} | {b['s_per_step']:.3f} | {ratio} | "
                         f"{plan['checkpointed_blocks']}/{plan['saved_attention']} | {b.get('reserved_fraction', 0):.1%} | "
                         f"{split} | {ex['warmup_s'][0]:.1f} |")
        pr = r.get("projection") or {}
        if pr.get("total_h") is not None and len(r["buckets"]) > 1:
            proj.append(f"- {p.stem[6:]}: {pr['steps']} × {pr['mean_s_per_step']} s = {pr['train_h']} h training + "
                        f"{pr['caching_h']} h caching + {pr['compile_h']} h warm-up + {pr['checkpoints_h']} h saves "
                        f"= **{pr['total_h']} h**")
    return lines + [""] + proj


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "trial_results")
    print("\n".join(rows(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
