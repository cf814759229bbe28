"""Dual-expert training: which expert a step trains, and each expert's own adapter and optimizer.

Wan 2.2 A14B routes by noise level: ``transformer`` (high noise, t ≥ boundary·1000) lays out motion and
composition, ``transformer_2`` (low noise) the detail.  Each gets its own LoRA and optimizer state; when
both are trained they alternate every ``switch_every`` optimizer steps, starting with the high-noise
expert (:mod:`engine.train.schedule`).  Gradient-accumulation micro-batches never straddle a switch (the
switch counts optimizer steps, not micro-batches, unlike ai-toolkit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from wanlora.engine.config.experts import EXPERTS, HIGH, LOW, trained_experts
from wanlora.engine.train.parking import ParkedWeights
from wanlora.engine.train.schedule import expert_for_step, steps_per_expert

# the names and the "which train" rule live in engine.config.experts, the alternation in engine.train.schedule
ORDER = EXPERTS

__all__ = ["HIGH", "LOW", "ORDER", "EXPERTS", "trained_experts", "expert_for_step", "steps_per_expert", "Expert",
           "swap_moves", "place_experts"]


@dataclass
class Expert:
    """One trained expert: its transformer (with the LoRA attached), the LoRA params, its optimizer."""

    name: str
    model: Any
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    steps_done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    parking: ParkedWeights | None = None  # low_vram: where its frozen weights wait (made at the first move)


def swap_moves(on_device: dict[str, bool], active: str | None) -> list[tuple[str, bool]]:
    """The moves that leave only ``active`` (None: no expert) on the GPU, as ``(expert, to_gpu)`` in order.

    Every idle expert leaves before the active one comes in, so a switch never holds two experts at once
    (the second expert ran out of memory where the first fit when the active one moved first)."""
    out = [(name, False) for name, there in on_device.items() if there and name != active]
    if active is not None and not on_device[active]:
        out.append((active, True))
    return out


def place_experts(experts: dict[str, Expert], active: str | None, device: torch.device, low_vram: bool) -> None:
    """With ``low_vram`` on CUDA keep only ``active``'s frozen weights (None: no expert's) on the GPU; the
    others wait in pinned host memory (:class:`~engine.train.parking.ParkedWeights`).

    The allocator returns the idle experts' blocks before ``active`` comes in (:func:`swap_moves`).
    Tensors move in place, so the optimizer keeps its references; the LoRA parameters and their optimizer
    state stay on the GPU.
    """
    if not low_vram or device.type != "cuda":
        return
    parks = {n: _parking(ex) for n, ex in experts.items()}
    moves = swap_moves({n: p.on_device(device) for n, p in parks.items()}, active)
    leaving = [name for name, to_gpu in moves if not to_gpu]
    for name in leaving:
        parks[name].park()
    if leaving:
        torch.cuda.empty_cache()  # the idle experts' blocks go back before the active one is placed
    for name in (name for name, to_gpu in moves if to_gpu):
        parks[name].unpark(device)


def _parking(ex: Expert) -> ParkedWeights:
    """The expert's parking, made at its first move."""
    if ex.parking is None:
        ex.parking = ParkedWeights(ex.model)
    return ex.parking
