"""The expert-parallel schedule against the alternating one, enumerated step by step (no processes)."""

from __future__ import annotations

import itertools

from wanlora.engine.train import expert_parallel as ep
from wanlora.engine.train.experts import expert_for_step, steps_per_expert

BOTH = ["high_noise", "low_noise"]


def _alternating(total: int, every: int) -> dict[str, list[int]]:
    """Each expert's global steps, in order, by walking the single-process loop."""
    out: dict[str, list[int]] = {e: [] for e in BOTH}
    for s in range(total):
        out[expert_for_step(s, BOTH, every)].append(s)
    return out


def test_each_experts_steps_are_the_alternating_runs() -> None:
    for every, total in itertools.product((1, 2, 3, 10), (1, 5, 12, 31)):
        ref = _alternating(total, every)
        counts = steps_per_expert(total, BOTH, every)
        for e in BOTH:
            got = [ep.global_step(e, i, BOTH, every) for i in range(counts[e])]
            assert got == ref[e], (e, every, total)
            assert ep.global_step(e, counts[e], BOTH, every) >= total  # nothing beyond the run
            assert [ep.local_index(s, BOTH, every) for s in ref[e]] == list(range(counts[e]))


def test_resume_picks_the_lowest_step_not_done() -> None:
    every, total = 3, 14
    ref = _alternating(total, every)
    for h, lo in itertools.product(range(len(ref["high_noise"]) + 1), range(len(ref["low_noise"]) + 1)):
        done = set(ref["high_noise"][:h]) | set(ref["low_noise"][:lo])
        left = [s for s in range(total) if s not in done]
        want = left[0] if left else None
        assert ep.next_global_step({"high_noise": h, "low_noise": lo}, BOTH, every, total) == want
    assert ep.steps_done_at(7, BOTH, every) == {"high_noise": 4, "low_noise": 3}
    assert ep.next_global_step({"high_noise": 1}, ["high_noise"], 5, 3) == 1  # one expert: plain steps


def test_crossed() -> None:
    assert ep.crossed(3, 5, 4) and not ep.crossed(4, 5, 4) and ep.crossed(3, 4, 4) and not ep.crossed(1, 3, 0)
