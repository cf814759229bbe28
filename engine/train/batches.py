"""The loop's view of the data layer: a stream of batches with a resumable position.

The loop needs three things (all provided by ``engine.data.dataset.ClipDataset``): ``next_batch()``
(pixels ``[B,3,F,H,W]`` in [-1, 1], captions with trigger + dropout applied; unreadable clips reported
through ``warn`` and skipped), ``state_dict()`` saved with the training state, and ``load_state_dict()``
to continue the same order bit for bit.  Tests may hand the trainer any object with this shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from wanlora.engine.config.schema import Job
from wanlora.engine.data.dataset import Batch, DataExhausted, build_dataset

__all__ = ["Batch", "BatchSource", "DataExhausted", "make_batch_source"]

Warn = Callable[..., None]


class BatchSource(Protocol):
    def next_batch(self) -> Batch: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def make_batch_source(job: Job, seed: int, warn: Warn, prefetch: int = 0, *, rank: int = 0,
                      world_size: int = 1) -> BatchSource:
    """The job's batch stream (this rank's shard of the global order); ``prefetch`` > 0 decodes that many
    batches ahead in threads (GPU runs)."""
    return build_dataset(job, seed=seed, warn=warn, num_workers=prefetch, rank=rank, world_size=world_size)
