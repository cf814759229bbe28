"""daemon.scheduling: which queued jobs start, on which slots, and what the others are told — no daemon, no I/O.

Each expectation is written out by hand from the rules (priority, then submission; held jobs never start;
a job only takes free slots), not computed by the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wanlora.daemon.scheduling import Machine, Start, Wait, next_to_start, pick_slots

GPU4 = Machine(("0", "1", "2", "3"), gpus=True)


@dataclass
class J:
    id: int
    priority: int = 0
    held: int = 0
    reason: str = "waiting for GPU"
    gpus_requested: Any = "auto"


def test_higher_priority_starts_first_then_the_earlier_submission() -> None:
    jobs = [J(1), J(2, priority=5), J(3), J(4, priority=5)]
    got = next_to_start(jobs, ["1", "3"], GPU4)
    # two free GPUs: the two priority-5 jobs, the earlier one on the lower GPU; 1 and 3 wait behind job 2
    # job 1 is the first to wait (nobody waits ahead of it): plain reason, unchanged, so no Wait for it;
    # job 3 waits behind job 1, same priority
    assert got == [Start(2, ("1",)), Start(4, ("3",)), Wait(3, "waiting for GPU (behind job 1, submitted earlier)")]


def test_a_lower_priority_job_is_told_which_job_goes_first() -> None:
    jobs = [J(7, priority=-1), J(3, priority=2)]
    assert next_to_start(jobs, [], GPU4) == [Wait(7, "priority (job 3 has a higher one)")]


def test_held_jobs_never_start_and_are_marked_held_once() -> None:
    jobs = [J(1, held=1, priority=9), J(2, held=1, reason="held"), J(3)]
    assert next_to_start(jobs, ["0", "1", "2", "3"], GPU4) == [Start(3, ("0",)), Wait(1, "held")]


def test_only_free_gpus_are_given_and_each_only_once() -> None:
    jobs = [J(1, gpus_requested=[2]), J(2, gpus_requested=[2]), J(3, gpus_requested=[0, 3]), J(4)]
    # free: 0, 2, 3.  Job 1 takes GPU 2; job 2 wants GPU 2 too and waits for it; job 3 takes 0 and 3;
    # job 4 (any GPU) finds none left
    got = next_to_start(jobs, ["3", "2", "0"], GPU4)
    assert got == [Start(1, ("2",)), Wait(2, "waiting for GPU 2"), Start(3, ("0", "3")),
                   Wait(4, "waiting for GPU (behind job 2, submitted earlier)")]


def test_all_needs_every_gpu_free_and_a_smaller_job_behind_it_still_starts() -> None:
    jobs = [J(1, gpus_requested="all"), J(2)]
    assert next_to_start(jobs, ["0", "1", "2"], GPU4) == [Wait(1, "waiting for GPU (needs all GPUs)"),
                                                          Start(2, ("0",))]


def test_all_on_a_fully_free_machine_takes_every_gpu_and_leaves_none() -> None:
    jobs = [J(1, gpus_requested="all"), J(2, reason="")]
    assert next_to_start(jobs, ["0", "1", "2", "3"], GPU4) == [Start(1, ("0", "1", "2", "3")),
                                                               Wait(2, "waiting for GPU")]


def test_a_gpu_this_machine_lacks_is_named() -> None:
    got = next_to_start([J(1, gpus_requested=[5])], ["0"], GPU4)
    assert got == [Wait(1, "waiting for GPU 5: this machine has GPUs 0,1,2,3")]


def test_cpu_slots_take_one_whatever_the_request_and_no_slots_says_why() -> None:
    cpu = Machine(("cpu0", "cpu1"), gpus=False)
    assert next_to_start([J(1, gpus_requested="all"), J(2, gpus_requested=[3])], ["cpu1"], cpu) == [
        Start(1, ("cpu1",))]
    assert pick_slots("auto", [], Machine((), gpus=False)) == (
        None, "waiting for GPU (no GPU on this machine and cpu_slots = 0 in config.toml)")
