"""Which queued jobs start now, and why the others wait: a pure function of the queue and the free slots.

No I/O and no clock: the supervisor's loop reads the queue, calls :func:`next_to_start`, and applies the
decisions in order (start a trainer, or record the reason a job waits).  Keeping it pure is what lets the
rules below be tested against a hand-written expectation, without a daemon, a database or a GPU.

Rules: jobs start by priority (higher first), then by submission (lower id first); a held job never
starts; a job that does not fit the free slots waits, and the ones after it are told whose turn comes
first (a later job that fits still starts: a one-GPU job does not wait behind one that needs all GPUs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from wanlora.daemon.queue import REASON_HELD, REASON_PRIORITY, REASON_WAITING


class QueuedJob(Protocol):
    """What scheduling reads of a queued job (:class:`daemon.queue.JobRow` has it all)."""

    @property
    def id(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def held(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def gpus_requested(self) -> Any: ...


@dataclass(frozen=True)
class Machine:
    """The slots this machine has: GPU indices as strings, or ``cpu0``… when no GPU was found."""

    slots: tuple[str, ...]
    gpus: bool  # False: CPU slots, where a job's ``gpus`` request means one slot whatever it says


@dataclass(frozen=True)
class Start:
    """Start this job on these slots."""

    job_id: int
    slots: tuple[str, ...]


@dataclass(frozen=True)
class Wait:
    """This job waits; its queue reason becomes ``reason`` (only emitted when that changes it)."""

    job_id: int
    reason: str


Decision = Start | Wait


def pick_slots(req: Any, free: Sequence[str], machine: Machine) -> tuple[tuple[str, ...] | None, str]:
    """Slots for one job's ``gpus`` request (``"auto"``, ``"all"`` or a list of indices) from the free ones,
    or ``(None, why it waits)``."""
    if not machine.slots:
        return None, f"{REASON_WAITING} (no GPU on this machine and cpu_slots = 0 in config.toml)"
    if not machine.gpus:
        return (tuple(free[:1]), "") if free else (None, REASON_WAITING)
    if req == "all":
        if len(free) == len(machine.slots):
            return tuple(machine.slots), ""
        return None, f"{REASON_WAITING} (needs all GPUs)"
    if isinstance(req, list):
        want = tuple(str(i) for i in req)
        missing = [w for w in want if w not in machine.slots]
        if missing:
            return None, f"{REASON_WAITING} {','.join(missing)}: this machine has GPUs {','.join(machine.slots)}"
        return (want, "") if all(w in free for w in want) else (None, f"{REASON_WAITING} {','.join(want)}")
    return (tuple(free[:1]), "") if free else (None, REASON_WAITING)


def _behind(ahead: QueuedJob, job: QueuedJob) -> str:
    if ahead.priority > job.priority:
        return f"{REASON_PRIORITY} (job {ahead.id} has a higher one)"
    return f"{REASON_WAITING} (behind job {ahead.id}, submitted earlier)"


def next_to_start(queued: Sequence[QueuedJob], free: Sequence[str], machine: Machine) -> list[Decision]:
    """The decisions for one scheduling pass, in the order to apply them.

    ``queued``: the jobs in state ``queued`` (any order); ``free``: the slots no running job holds.  Each
    :class:`Start` takes its slots out of ``free`` for the jobs after it.
    """
    decisions: list[Decision] = []
    free_now = [s for s in machine.slots if s in set(free)]
    ahead: QueuedJob | None = None  # the first job that waits: later ones wait behind it
    for job in sorted(queued, key=lambda j: (bool(j.held), -j.priority, j.id)):
        if job.held:
            if job.reason != REASON_HELD:
                decisions.append(Wait(job.id, REASON_HELD))
            continue
        slots, why = pick_slots(job.gpus_requested, free_now, machine)
        if slots is None:
            reason = _behind(ahead, job) if ahead is not None and why == REASON_WAITING else why
            ahead = ahead or job
            if job.reason != reason:
                decisions.append(Wait(job.id, reason))
            continue
        decisions.append(Start(job.id, slots))
        free_now = [s for s in free_now if s not in slots]
    return decisions
