"""Which timestep each training sample sees: the table (type), the index (bias) and the expert's range.

The recipe is ai-toolkit's (what the guide describes), with the expert range fixed to the rule the
inference pipeline routes by.  All formulas, with N = 1000 training timesteps:

**Table** — a *descending* list of N timesteps ``t`` on the 0–1000 scale (``σ = t / 1000``):

- ``linear``:  ``t_i = linspace(1000, 1, N)[i]``
- ``sigmoid``: ``t = sort_desc((1 − sigmoid(z)) · 1000)``, ``z ~ N(0, 1)^N`` (redrawn every step; most
  draws land mid-range)
- ``shift``:   ``σ_i = linspace(1, 1/N, N)[i]``, ``σ'_i = 5σ_i / (1 + 4σ_i)``, ``t_i = 1000 σ'_i``
  (shift 5, Wan's own sampling shift; pushes mass toward high noise)

**Expert range** — defined on the timestep the model sees, as ``WanImageToVideoPipeline`` routes:
high-noise expert ``t ≥ boundary · 1000``, low-noise expert ``t < boundary · 1000``.  Because the table
descends, each range is one contiguous index slice ``[lo, hi)`` (high: ``[0, k)``, low: ``[k, N)``, with
``k = #{i : t_i ≥ boundary·1000}``).

**Index** — ``u ~ U[0, 1)``, ``n = hi − lo``:

- ``balanced``:   ``i = lo + ⌊u · n⌋``          (uniform over the expert's slice)
- ``high_noise``: ``i = lo + ⌊u³ · n⌋``         (piles up at the slice's high-t end)
- ``low_noise``:  ``i = lo + ⌊(1 − u³) · n⌋``   (piles up at the slice's low-t end), clamped to ``hi − 1``

If an expert's slice is empty (a sigmoid table can, very rarely, have no entry ≥ 900), ``t`` is drawn
from the expert's continuous range instead, with the same bias applied to ``u``, so a step never
trains an expert on the other expert's noise levels.
"""

from __future__ import annotations

from typing import Literal

import torch

NUM_TRAIN_TIMESTEPS = 1000
SHIFT = 5.0

TimestepType = Literal["linear", "sigmoid", "shift"]
TimestepBias = Literal["balanced", "high_noise", "low_noise"]
Expert = Literal["high_noise", "low_noise"]


def shift_sigma(sigma: torch.Tensor, shift: float = SHIFT) -> torch.Tensor:
    """``σ' = s·σ / (1 + (s − 1)·σ)`` — the flow-matching time shift (s = 5 here)."""
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def timestep_table(
    kind: TimestepType, generator: torch.Generator | None = None, n: int = NUM_TRAIN_TIMESTEPS
) -> torch.Tensor:
    """Descending fp32 table of ``n`` timesteps on the 0–1000 scale (formulas in the module docstring)."""
    if kind == "linear":
        return torch.linspace(1000.0, 1.0, n, dtype=torch.float32)
    if kind == "sigmoid":
        z = torch.randn(n, generator=generator, dtype=torch.float32)
        return torch.sort((1.0 - torch.sigmoid(z)) * 1000.0, descending=True).values
    if kind == "shift":
        sigma = torch.linspace(1.0, 1.0 / n, n, dtype=torch.float32)
        return shift_sigma(sigma) * 1000.0
    raise ValueError(f"unknown timestep type {kind!r}; expected linear, sigmoid or shift")


def boundary_t(boundary_ratio: float) -> float:
    """The routing timestep: ``t ≥ boundary_ratio·1000`` goes to the high-noise expert."""
    return float(boundary_ratio) * NUM_TRAIN_TIMESTEPS


def expert_slice(table: torch.Tensor, expert: Expert, boundary_ratio: float) -> tuple[int, int]:
    """``[lo, hi)`` indices of ``table`` (descending) whose timesteps belong to ``expert``."""
    k = int((table >= boundary_t(boundary_ratio)).sum().item())
    if expert == "high_noise":
        return 0, k
    if expert == "low_noise":
        return k, int(table.numel())
    raise ValueError(f"unknown expert {expert!r}")


def _biased_u(u: torch.Tensor, bias: TimestepBias) -> torch.Tensor:
    """Map uniform ``u`` to the position inside the slice (0 = high-t end, 1 = low-t end)."""
    if bias == "balanced":
        return u
    if bias == "high_noise":
        return u**3
    if bias == "low_noise":
        return 1.0 - u**3
    raise ValueError(f"unknown timestep bias {bias!r}; expected balanced, high_noise or low_noise")


def sample_timesteps(
    batch: int,
    expert: Expert,
    boundary_ratio: float,
    kind: TimestepType = "linear",
    bias: TimestepBias = "balanced",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``batch`` fp32 timesteps (0–1000 scale) for ``expert``; every one lies in the expert's range.

    Draws (in this order, from ``generator``): the sigmoid table's normals if ``kind == "sigmoid"``,
    then ``batch`` uniforms.  Deterministic given the generator's state (resume relies on it).
    """
    table = timestep_table(kind, generator)
    lo, hi = expert_slice(table, expert, boundary_ratio)
    u = _biased_u(torch.rand(batch, generator=generator, dtype=torch.float32), bias)
    if hi > lo:
        idx = (lo + torch.floor(u * (hi - lo)).long()).clamp(max=hi - 1)
        return table[idx]
    # Empty slice: fall back to the expert's continuous range (still biased the same way).
    b = boundary_t(boundary_ratio)
    if expert == "high_noise":
        return 1000.0 - u * (1000.0 - b)  # u=0 → 1000, u→1 → boundary (inclusive side)
    low = torch.full_like(u, 1.0)
    return torch.minimum(b - u * (b - 1.0), torch.nextafter(torch.tensor(b), torch.tensor(0.0))).maximum(low)


def sigmas_from_timesteps(t: torch.Tensor) -> torch.Tensor:
    """``σ = t / 1000`` (the noise level the flow-matching objective uses)."""
    return t / float(NUM_TRAIN_TIMESTEPS)
