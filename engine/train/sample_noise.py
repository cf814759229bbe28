"""Timesteps and noise drawn per sample from (seed, the sample's global position), not from a running stream.

With one shared generator stream, what a sample gets depends on how many draws came before it — on the
batch size, on the rank it landed on, on the world size.  Keyed per sample, a run is the same function of
its data order everywhere: N ranks × batch b draw exactly what one process with batch N·b draws, and a
run resumed under another number of GPUs continues the same random sequence.  Nothing to save for resume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from wanlora.engine.train.timesteps import sample_timesteps


def sample_seed(seed: int, position: int, what: str) -> int:
    """A stable 63-bit seed for ``what`` ("t" or "noise") of the sample at global ``position``."""
    h = hashlib.blake2b(f"{seed}:{what}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def draw_per_sample(positions: Sequence[int], seed: int, shape: Sequence[int], *, expert: str,
                    boundary_ratio: float, kind: str, bias: str, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t [B] on device, noise [B, *shape] on device)`` for the samples at ``positions``."""
    gen_t = torch.Generator("cpu")
    gen_n = torch.Generator(device)
    ts, noise = [], torch.empty((len(positions), *shape), device=device, dtype=dtype)
    for i, pos in enumerate(positions):
        gen_t.manual_seed(sample_seed(seed, pos, "t"))
        ts.append(sample_timesteps(1, expert, boundary_ratio, kind, bias, generator=gen_t))  # type: ignore[arg-type]
        gen_n.manual_seed(sample_seed(seed, pos, "noise"))
        noise[i] = torch.randn(tuple(shape), generator=gen_n, device=device, dtype=dtype)
    return torch.cat(ts).to(device), noise


def batch_positions(batch: object) -> list[int] | None:
    """The global positions of a batch's samples, or None for a batch source that does not track them."""
    samples = getattr(batch, "samples", None)
    if not samples:
        return None
    pos = [getattr(s, "position", None) for s in samples]
    return None if any(p is None for p in pos) else [int(p) for p in pos]  # type: ignore[arg-type]
