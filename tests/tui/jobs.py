"""Job folders with a fixed, realistic history (what the trainer writes), for the dashboard tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

from wanlora.engine.config import jobdir

T0 = 1_750_000_000.0  # the fixed clock of the snapshot tests


def loss_at(step: int) -> float:
    """A plausible flow-matching loss curve: decaying, with deterministic noise."""
    return 0.08 + 0.12 * math.exp(-step / 600) + 0.03 * math.sin(step * 12.9898) ** 2


def write_job(home: Path, job_id: str = "1", *, name: str = "orbit_v1", steps_done: int = 1200,
              total: int = 3000, state: str = "running", heartbeat_age_s: float = 2.0,
              checkpoints: int = 4, log_lines: int = 30) -> Path:
    d = home / "jobs" / job_id
    (d / jobdir.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    (d / jobdir.JOB_TOML).write_text(f'[job]\nname = "{name}"\npreset = "motion"\n')
    seq = 0
    with open(d / jobdir.EVENTS, "w") as f:
        def emit(type_: str, **kw: object) -> None:
            nonlocal seq
            seq += 1
            f.write(json.dumps({"v": 1, "seq": seq, "ts": T0 - 10000 + seq, "type": type_, **kw}) + "\n")

        emit("state", state="running", step=0, total_steps=total)
        for s in range(1, steps_done + 1):
            expert = "high_noise" if (s - 1) // 10 % 2 == 0 else "low_noise"
            emit("step", step=s, total_steps=total, loss=round(loss_at(s), 5), lr=1e-4, expert=expert,
                 timestep=950.0 if expert == "high_noise" else 430.0, s_per_step=2.31, peak_vram_gb=61.2,
                 eta_s=round(2.31 * (total - s), 1))
            if s % 250 == 0:
                emit("checkpoint", step=s, files=[f"{name}_high_noise_{s}.safetensors"], final=False)
    for i in range(1, checkpoints + 1):
        for ex in ("high_noise", "low_noise"):
            (d / jobdir.CHECKPOINTS / f"{name}_{ex}_{i * 250:06d}.safetensors").write_bytes(b"x")
    status = {
        "v": 1, "state": state, "step": steps_done, "total_steps": total, "loss": loss_at(steps_done),
        "expert": "high_noise", "eta_s": round(2.31 * (total - steps_done), 1),
        "heartbeat_ts": T0 - heartbeat_age_s, "heartbeat_interval_s": 10.0, "last_checkpoint": None,
        "gpus": [{"idx": 0, "util": 97, "mem_used_mb": 62700, "mem_total_mb": 81559, "temp_c": 67, "power_w": 612}],
    }
    jobdir.write_json_atomic(d / jobdir.STATUS, status)
    with open(d / jobdir.TRAIN_LOG, "w") as f:
        for i in range(log_lines):
            s = max(1, steps_done - log_lines + i + 1)
            f.write(f"step {s}/{total} loss {loss_at(s):.4f} 2.31 s/step\n")
    return d
