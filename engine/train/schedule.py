"""The expert schedule: which trained expert each optimizer step belongs to, as one object.

Both experts alternate in blocks of ``switch_every`` optimizer steps, high noise first; the phase is a pure
function of the step, so resume restores it for free.  Expert-parallel runs the same schedule, each group
its own expert's steps in their order (:mod:`engine.train.expert_parallel`): what is done is then a count
per expert, and a run continues from the lowest step not done yet.

The pure functions below are the arithmetic; :class:`ExpertSchedule` binds them to one job's trained
experts, ``switch_every`` and ``steps`` so callers stop passing that trio around.  Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wanlora.engine.config.experts import trained_experts


# ---------------------------------------------------------------- the arithmetic (pure)
def expert_for_step(step: int, trained: Sequence[str], switch_every: int) -> str:
    """Expert trained by 0-based optimizer step ``step``: blocks of ``switch_every`` steps, cycling ``trained``."""
    if not trained:
        raise ValueError("no expert to train")
    return trained[(step // max(1, switch_every)) % len(trained)]


def steps_per_expert(total_steps: int, trained: Sequence[str], switch_every: int) -> dict[str, int]:
    """How many of ``total_steps`` each expert gets (for ETA and reports)."""
    counts = {e: 0 for e in trained}
    full, rest = divmod(total_steps, switch_every * len(trained))
    for e in trained:
        counts[e] = full * switch_every
    for i, e in enumerate(trained):
        take = min(switch_every, max(0, rest - i * switch_every))
        counts[e] += take
    return counts


def global_step(expert: str, i: int, trained: Sequence[str], switch_every: int) -> int:
    """The global optimizer step of ``expert``'s ``i``-th step (0-based) in the alternating schedule."""
    n, blk = len(trained), max(1, switch_every)
    cycle, off = divmod(i, blk)
    return cycle * blk * n + list(trained).index(expert) * blk + off


def local_index(step: int, trained: Sequence[str], switch_every: int) -> int:
    """Which of its expert's steps global ``step`` is (inverse of :func:`global_step`)."""
    blk = max(1, switch_every)
    return (step // (blk * len(trained))) * blk + step % blk


def next_global_step(steps_done: Mapping[str, int], trained: Sequence[str], switch_every: int,
                     total: int) -> int | None:
    """The lowest global step below ``total`` not done yet (each expert has done its first ``steps_done``)."""
    cands = [global_step(e, int(steps_done.get(e, 0)), trained, switch_every) for e in trained]
    left = [s for s in cands if s < total]
    return min(left) if left else None


def steps_done_at(step: int, trained: Sequence[str], switch_every: int) -> dict[str, int]:
    """Per-expert counts after the global steps ``[0, step)`` (a state that only recorded ``step``)."""
    out = {e: 0 for e in trained}
    for s in range(step):
        out[expert_for_step(s, trained, switch_every)] += 1
    return out


# ---------------------------------------------------------------- one job's schedule
@dataclass(frozen=True)
class ExpertSchedule:
    """One run's alternation: the trained experts (high first), ``switch_every`` and the job's ``steps``."""

    trained: tuple[str, ...]
    switch_every: int
    steps: int

    def __post_init__(self) -> None:
        if not self.trained:
            raise ValueError("no expert to train")

    @classmethod
    def of(cls, job: Any) -> ExpertSchedule:
        """The schedule of a :class:`engine.config.schema.Job` (``multistage`` and ``training.steps``)."""
        ms = job.multistage
        return cls(tuple(trained_experts(ms.high_noise.train, ms.low_noise.train)), ms.switch_every,
                   job.training.steps)

    def expert_for(self, step: int) -> str:
        """The expert global step ``step`` trains."""
        return expert_for_step(step, self.trained, self.switch_every)

    def steps_per_expert(self) -> dict[str, int]:
        """How many of the job's steps each expert gets."""
        return steps_per_expert(self.steps, self.trained, self.switch_every)

    def global_step(self, expert: str, i: int) -> int:
        """The global step of ``expert``'s ``i``-th step (0-based)."""
        return global_step(expert, i, self.trained, self.switch_every)

    def first_step_of(self, expert: str) -> int:
        """The first global step ``expert`` trains (a trial times each expert from there)."""
        return self.global_step(expert, 0)

    def next_step(self, steps_done: Mapping[str, int]) -> int | None:
        """The lowest step of the job not done yet, given each expert's count (None: all done)."""
        return next_global_step(steps_done, self.trained, self.switch_every, self.steps)

    def steps_done_at(self, step: int) -> dict[str, int]:
        """Each expert's count after the global steps ``[0, step)``."""
        return steps_done_at(step, self.trained, self.switch_every)

    def switches(self) -> int:
        """How often the run changes expert (0 with one expert trained)."""
        if len(self.trained) < 2:
            return 0
        return max(0, math.ceil(self.steps / max(1, self.switch_every)) - 1)
