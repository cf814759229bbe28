"""The data order: which clip, at which resolution, in which batch — deterministic, resumable, shardable.

Pure Python (no torch, no decoding), so every rank computes the *same global sequence* of batches from
metadata alone and a resume only needs one number, the index of the next global batch.

- **Epochs and weights.**  Every clip of dataset ``d`` has sampling weight ``w_d``; weights are scaled so
  the heaviest dataset contributes each of its clips once per epoch, and dataset ``d`` contributes
  ``n_d · w_d / w_max`` clips per epoch (fractions carried over exactly between epochs).  Each dataset is
  read through its own endless stream of shuffled permutations, so a down-weighted dataset still cycles
  through all its clips.  The epoch's picks are then shuffled together.
- **Resolutions.**  A clip's resolution is ``resolutions[(clip + cycle) % R]``: each pass over a dataset
  moves every clip to the next resolution, so all clips see all resolutions equally often.
- **Batches.**  Samples of one batch share a bucket (frames, height, width): samples are dealt into
  per-bucket queues and a batch leaves when its queue holds ``batch_size`` (leftovers wait, across epochs).
- **Sharding.**  Global batch ``g`` goes to rank ``g % world_size`` (counted from the resume point), so
  a resume under a different world size continues the same global sequence.
- **Randomness.**  Each sample gets its own seed from (seed, position): frame offsets, flips and caption
  dropout depend on nothing else, so loading is a pure function of the :class:`SampleRef`.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

Bucket = tuple[int, int, int]  # (frames, height, width)


def _mix(*parts: object) -> int:
    """A stable 64-bit seed from parts (Python's hash() is salted per process; this is not)."""
    h = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


@dataclass(frozen=True)
class SourceSpec:
    """What the order needs to know about one dataset: per clip, its bucket at each resolution."""

    weight: float
    resolutions: tuple[int, ...]
    buckets: tuple[tuple[Bucket, ...], ...]  # buckets[clip][resolution index]

    @property
    def n(self) -> int:
        return len(self.buckets)


@dataclass(frozen=True)
class SampleRef:
    """One planned sample: everything needed to load it, deterministically."""

    position: int  # global position in the sample stream
    epoch: int
    dataset_index: int
    clip_index: int
    resolution: int
    bucket: Bucket
    seed: int  # this sample's own seed (frame offset, flips, caption dropout)


@dataclass(frozen=True)
class PlannedBatch:
    index: int  # global batch index
    refs: tuple[SampleRef, ...]
    bucket: Bucket
    epoch: int  # epoch of the sample that completed the batch


class DataOrder:
    """The global, endless sequence of batches for ``sources`` under ``seed`` and ``batch_size``."""

    def __init__(self, sources: Sequence[SourceSpec], seed: int, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.sources = [s for s in sources]
        if not any(s.n for s in self.sources):
            raise ValueError("no clips to order")
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        w_max = max(Fraction(s.weight).limit_denominator(10**6) for s in self.sources if s.n)
        # clips of dataset d per epoch, exact (Fraction) so epochs carry fractions over without drift
        self.per_epoch = [
            Fraction(s.weight).limit_denominator(10**6) / w_max * s.n if s.n else Fraction(0) for s in self.sources
        ]
        self._gen: Iterator[PlannedBatch] | None = None
        self._next_index = 0

    # ---------------------------------------------------------------- epochs and samples
    def _perm(self, d: int, cycle: int) -> list[int]:
        order = list(range(self.sources[d].n))
        random.Random(_mix(self.seed, "perm", d, cycle)).shuffle(order)
        return order

    def epoch_picks(self, epoch: int) -> list[tuple[int, int, int]]:
        """(dataset, clip, cycle) picked in ``epoch``, in training order."""
        picks: list[tuple[int, int, int]] = []
        for d, c in enumerate(self.per_epoch):
            n = self.sources[d].n
            lo, hi = math.floor(c * epoch), math.floor(c * (epoch + 1))
            perms: dict[int, list[int]] = {}
            for s in range(lo, hi):
                cycle = s // n
                if cycle not in perms:
                    perms[cycle] = self._perm(d, cycle)
                picks.append((d, perms[cycle][s % n], cycle))
        random.Random(_mix(self.seed, "epoch", epoch)).shuffle(picks)
        return picks

    def samples(self) -> Iterator[SampleRef]:
        """The endless sample stream from position 0."""
        pos, epoch = 0, 0
        while True:
            for d, clip, cycle in self.epoch_picks(epoch):
                src = self.sources[d]
                r = (clip + cycle) % len(src.resolutions)
                yield SampleRef(pos, epoch, d, clip, src.resolutions[r], src.buckets[clip][r], _mix(self.seed, "sample", pos))
                pos += 1
            epoch += 1

    def batches(self) -> Iterator[PlannedBatch]:
        """The endless global batch sequence from index 0 (bucket-homogeneous batches)."""
        pending: dict[Bucket, list[SampleRef]] = {}
        index = 0
        for ref in self.samples():
            q = pending.setdefault(ref.bucket, [])
            q.append(ref)
            if len(q) == self.batch_size:
                yield PlannedBatch(index, tuple(q), ref.bucket, ref.epoch)
                index += 1
                del pending[ref.bucket]

    # ---------------------------------------------------------------- random access (replay)
    def batch(self, index: int) -> PlannedBatch:
        """Global batch ``index``: replays from the start when asked to go back (cheap: metadata only)."""
        if index < 0:
            raise ValueError("batch index must be >= 0")
        if self._gen is None or index < self._next_index:
            self._gen, self._next_index = self.batches(), 0
        while True:
            b = next(self._gen)
            self._next_index = b.index + 1
            if b.index == index:
                return b

    def rank_batches(self, start: int, rank: int = 0, world_size: int = 1) -> Iterator[PlannedBatch]:
        """This rank's batches from global batch ``start``: start+rank, start+rank+W, ..."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        g = start + rank
        while True:
            yield self.batch(g)
            g += world_size
