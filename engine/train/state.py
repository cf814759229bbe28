"""Resumable training state: everything needed to continue a run bit for bit.

One folder per save, ``JOB_DIR/state/step_000250/``:

- ``adapters.safetensors`` — every trained expert's LoRA weights, full precision (``<expert>/<peft key>``)
- ``optim_<expert>.pt``     — that expert's optimizer state
- ``rng.pt``               — python, numpy, torch CPU (+ every CUDA device) and the trainer's own generators
- ``meta.json``            — step, expert phase, data-order position, job name; written last

A save is built in a hidden temp folder, every file fsynced, then renamed into place: a folder named
``step_*`` with a ``meta.json`` is complete by construction, and :func:`latest_state` only ever picks
such folders.  Older states are pruned after the new one is in place.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from wanlora.engine.config import jobdir
from wanlora.engine.model.lora_format import fsync_dir

META = "meta.json"
ADAPTERS = "adapters.safetensors"
RNG = "rng.pt"
_STEP_DIR = re.compile(r"^step_(\d{6,})$")
STATE_FORMAT = 1


def state_root(job_dir: Path) -> Path:
    return Path(job_dir) / jobdir.STATE_DIR


def capture_rng(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Snapshot of every random source the run draws from."""
    out: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this process's device only: every rank has its own, and touching the others would open a CUDA
        # context on each GPU of a multi-GPU job
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def restore_rng(rng: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put every random source back where :func:`capture_rng` found it."""
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        cuda = rng["cuda"]  # a list (all devices) in states of earlier builds
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, (list, tuple)) else cuda)
    for k, state in rng["generators"].items():
        if k in generators:
            generators[k].set_state(state)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_state(job_dir: Path, step: int, *, adapters: dict[str, dict[str, torch.Tensor]],
               optimizers: dict[str, dict[str, Any]], rng: dict[str, Any], meta: dict[str, Any],
               keep: int = 2) -> Path:
    """Write a complete state for ``step`` atomically; keep the newest ``keep`` states."""
    from safetensors.torch import save_file

    root = state_root(job_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    flat = {f"{e}/{k}": v.detach().to("cpu").contiguous() for e, sd in adapters.items() for k, v in sd.items()}
    save_file(flat, str(tmp / ADAPTERS))
    for e, sd in optimizers.items():
        torch.save(sd, tmp / f"optim_{e}.pt")
    torch.save(rng, tmp / RNG)
    (tmp / META).write_text(json.dumps({"format": STATE_FORMAT, "step": step, **meta}, indent=1))
    for p in tmp.iterdir():
        _fsync_file(p)
    fsync_dir(tmp)
    if final.exists():  # the same step saved twice (save_now then pause): the newer one wins
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    prune_states(job_dir, keep)
    return final


def list_states(job_dir: Path) -> list[tuple[int, Path]]:
    """Complete states as (step, folder), oldest first."""
    root = state_root(job_dir)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / META).is_file() and (p / ADAPTERS).is_file() and (p / RNG).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_state(job_dir: Path) -> Path | None:
    """The newest complete state folder whose ``meta.json`` parses, or None."""
    for _step, p in reversed(list_states(job_dir)):
        try:
            json.loads((p / META).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        return p
    return None


def prune_states(job_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete states, and stale temp folders of dead saves."""
    states = list_states(job_dir)
    for _step, p in states[: max(0, len(states) - keep)]:
        shutil.rmtree(p, ignore_errors=True)
    root = state_root(job_dir)
    for p in root.glob(".tmp_step_*"):
        if not p.name.endswith(f"_{os.getpid()}"):
            shutil.rmtree(p, ignore_errors=True)


def load_state(path: Path) -> dict[str, Any]:
    """``{"meta", "adapters": {expert: state}, "optimizers": {expert: state}, "rng"}`` of a state folder."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads((path / META).read_text())
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(path / ADAPTERS)).items():
        expert, _, k = key.partition("/")
        adapters.setdefault(expert, {})[k] = value
    optimizers = {p.stem.removeprefix("optim_"): torch.load(p, map_location="cpu", weights_only=False)
                  for p in sorted(path.glob("optim_*.pt"))}
    rng = torch.load(path / RNG, map_location="cpu", weights_only=False)
    return {"meta": meta, "adapters": adapters, "optimizers": optimizers, "rng": rng}
