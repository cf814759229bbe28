"""Which timestep each training sample sees: the table (type), the index (bias) and the expert's range.

The recipe is ai-toolkit's (what the guide describes), with the expert range fixed to the rule the
inference pipeline routes by.  All formulas, with N = 1000 training timesteps:

**Table** — a *descending* list of N timesteps ``t`` on the 0–1000 scale (``σ = t / 1000``):

- ``linear``:  ``t_i = linspace(1000, 1, N)[i]``
- ``sigmoid``: ``t = sort_desc((1 − sigmoid(z)) · 1000)``, ``z ~ N(0, 1)^N`` (redrawn every step; most
  draws land mid-range)
- ``shift``:   ``σ_i = linspace(1, σ_min, N)[i]`` with ``σ_min = S(1/N)``, then ``t_i = 1000 · S(σ_i)``, where
  ``S(σ) = 5σ / (1 + 4σ)`` (shift 5; pushes mass toward high noise).  This is ai-toolkit's table exactly
  (``toolkit/samplers/custom_flowmatch_sampler.py`` ``set_train_timesteps``: it spans the scheduler's own
  sigma range, ``FlowMatchEulerDiscreteScheduler(shift=5)``'s ``sigma_max = 1`` to ``sigma_min = S(1/N)``,
  already shifted once, and shifts again).  For N = 1000 that is ``σ_i = (1004 − i)/1004`` and
  ``t_i = 5000·(1004 − i) / (5020 − 4i)``: 1000 at i = 0, 24.41 at i = 999 (not 4.98)

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

import torch
from wanlora.engine.config.experts import HIGH, LOW, ExpertName
from wanlora.engine.config.schema import TimestepBias, TimestepType

NUM_TRAIN_TIMESTEPS = 1000
SHIFT = 5.0

Expert = ExpertName


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
    if kind == "shift":  # in float64 like ai-toolkit's numpy, then fp32
        sigma_min = float(shift_sigma(torch.tensor(1.0 / n, dtype=torch.float64)))
        sigma = torch.linspace(1.0, sigma_min, n, dtype=torch.float64)
        return (shift_sigma(sigma) * 1000.0).to(torch.float32)
    raise ValueError(f"unknown timestep type {kind!r}; expected linear, sigmoid or shift")


def boundary_t(boundary_ratio: float) -> float:
    """The routing timestep: ``t ≥ boundary_ratio·1000`` goes to the high-noise expert."""
    return float(boundary_ratio) * NUM_TRAIN_TIMESTEPS


def expert_slice(table: torch.Tensor, expert: Expert, boundary_ratio: float) -> tuple[int, int]:
    """``[lo, hi)`` indices of ``table`` (descending) whose timesteps belong to ``expert``."""
    k = int((table >= boundary_t(boundary_ratio)).sum().item())
    if expert == HIGH:
        return 0, k
    if expert == LOW:
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
    if expert == HIGH:
        return 1000.0 - u * (1000.0 - b)  # u=0 → 1000, u→1 → boundary (inclusive side)
    low = torch.full_like(u, 1.0)
    return torch.minimum(b - u * (b - 1.0), torch.nextafter(torch.tensor(b), torch.tensor(0.0))).maximum(low)


def sigmas_from_timesteps(t: torch.Tensor) -> torch.Tensor:
    """``σ = t / 1000`` (the noise level the flow-matching objective uses)."""
    return t / float(NUM_TRAIN_TIMESTEPS)
