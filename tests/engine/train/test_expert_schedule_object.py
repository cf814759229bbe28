"""ExpertSchedule binds (trained, switch_every, steps) once; its answers match a step-by-step simulation."""

from __future__ import annotations

import pytest
from wanlora.engine.train.schedule import ExpertSchedule

BOTH = ("high_noise", "low_noise")


def _simulate(trained: tuple[str, ...], every: int, steps: int) -> list[str]:
    """The alternation written out: ``every`` steps of each expert in turn, high first."""
    out: list[str] = []
    while len(out) < steps:
        for e in trained:
            out += [e] * every
    return out[:steps]


@pytest.mark.parametrize(("trained", "every", "steps"), [(BOTH, 1, 7), (BOTH, 3, 20), (BOTH, 10, 25),
                                                         (("low_noise",), 4, 9), (BOTH, 5, 5)])
def test_the_schedule_agrees_with_the_written_out_alternation(trained, every, steps) -> None:
    sched = ExpertSchedule(trained, every, steps)
    seq = _simulate(trained, every, steps)
    assert [sched.expert_for(s) for s in range(steps)] == seq
    assert sched.steps_per_expert() == {e: seq.count(e) for e in trained}
    assert sched.switches() == sum(1 for a, b in zip(seq, seq[1:], strict=False) if a != b)
    for e in trained:
        if e in seq:
            assert sched.first_step_of(e) == seq.index(e)
        own = [s for s, x in enumerate(seq) if x == e]
        assert [sched.global_step(e, i) for i in range(len(own))] == own
    for k in range(steps + 1):  # a step prefix: the next step is k, and the counts are the prefix's
        done = {e: seq[:k].count(e) for e in trained}
        assert sched.steps_done_at(k) == done
        assert sched.next_step(done) == (k if k < steps else None)


def test_a_schedule_without_experts_is_refused() -> None:
    with pytest.raises(ValueError, match="no expert"):
        ExpertSchedule((), 10, 100)
