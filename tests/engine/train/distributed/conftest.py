"""Helpers for the multi-process tests: launching trainer processes and comparing their Adam weights (the tiny
model and clips come from tests/engine/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[4]


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment for trainer processes: repo importable, no inherited torchrun variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def start(cmd: Sequence[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(list(cmd), cwd=ROOT, env=child_env(**env), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def finish(p: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> int:
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.wait()
        pytest.fail(f"trainer did not finish in {timeout}s; log:\n{log.read_text()[-3000:]}")


def wait_for_step(job_dir: Path, step: int, p: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Block until events.jsonl shows ``step`` (or the process ended)."""
    from wanlora.engine.config import jobdir

    end = time.monotonic() + timeout
    while time.monotonic() < end and p.poll() is None:
        if any(e.get("type") == "step" and e["step"] >= step for e in jobdir.read_events(job_dir)):
            return
        time.sleep(0.02)


def python() -> str:
    return sys.executable


def adam_rms(state_dir: Path, model_dir: Path, rank: int = 8) -> dict[str, tuple[torch.Tensor, int]]:
    """``"<expert>/<peft key>" → (√v̂, Adam steps taken)`` from a saved state's optimizers: each LoRA weight's
    bias-corrected gradient RMS, the unit Adam divides its gradient by (see :func:`assert_same_adam_weights`)."""
    from wanlora.engine.model.folder import load_expert
    from wanlora.engine.model.lora import ADAPTER_NAME, add_lora
    from wanlora.engine.train.state import load_state

    model = load_expert(model_dir, "high_noise", torch.float32)  # both experts share the layout
    add_lora(model, rank, rank, "attn+ffn")
    # the optimizer's param ids follow add_lora's list: the lora params in named_parameters order
    names = [n.replace(f".{ADAPTER_NAME}.", ".") for n, _ in model.named_parameters() if "lora_" in n]
    out: dict[str, tuple[torch.Tensor, int]] = {}
    for expert, opt in load_state(state_dir)["optimizers"].items():
        for name, i in zip(names, opt["param_groups"][0]["params"], strict=True):
            s = opt["state"][i]
            steps = int(s["step"])
            out[f"{expert}/{name}"] = ((s["exp_avg_sq"] / (1 - 0.999 ** steps)).sqrt(), steps)
    return out


def assert_same_adam_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor],
                             rms: dict[str, tuple[torch.Tensor, int]], lr: float, rel: float = 1e-3) -> None:
    """Two runs that saw the same data agree, judged where rounding lives: in the gradients.

    Adam divides each gradient by its own RMS √v̂, so a rounding difference δ in a gradient moves the weight
    by up to ~2·lr·δ/(√v̂+ε) per step. Where a gradient is itself at rounding level (the tiny model's cross
    attention: √v̂ ≈ 1e-7 in a layer whose largest is 5e-5) that is ~lr either way, and a weight tolerance
    would fail on CPUs that sum in another order (0.000178 against atol 1e-4 was seen). So each difference
    is turned back into gradient units, δ_i = |Δw_i|·(√v̂_i+ε)/(2·lr·steps), and must stay under ``rel`` ×
    the layer's largest √v̂: float32 summation order gave 6e-5 (Zen 5, AVX-512); a wrong data split gives
    6e-4 to 0.3 (median 0.08) per layer, so most layers fail it."""
    assert got.keys() == want.keys() and len(want) > 0
    worst = {}
    for k in want:
        r, steps = rms[k]
        d = (got[k].float() - want[k].float()).abs() * (r + 1e-8) / (2 * lr * steps)
        worst[k] = (d.max() / r.max()).item()
    bad = {k: f"{v:.2g}" for k, v in worst.items() if not v <= rel}
    assert not bad, f"weights differ by more than float32 summation order explains (δ/max √v̂ > {rel}): {bad}"
