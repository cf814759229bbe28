"""bench/multigpu.py's code path on the CPU: tiny model, 1 then 2 gloo processes through the torchrun launcher."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.engine.train.distributed.conftest import ROOT, child_env


def test_multigpu_bench_runs_tiny_on_two_cpu_processes() -> None:
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "multigpu.py"), "--tiny", "--steps", "2", "--warmup", "1"],
                       capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert [r["world"] for r in rows] == [1, 2]
    assert all(r["loss_finite"] and r["samples_per_s"] > 0 for r in rows)
    scaling = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("SCALING "))[8:])
    assert scaling["gpus"] == 2 and scaling["ratio"] > 0
