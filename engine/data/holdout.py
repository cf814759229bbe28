"""Which clips are held out for evaluation (pure, torch-free).

Eval data must never reach a training batch, and the held-out set must be the same on every rank, every
restart and in ``wanlora compare`` days later, or eval losses of two checkpoints would not be comparable.
So the choice depends on file names only:

- a dataset with ``is_eval = true``: every clip is held out;
- ``eval_fraction = f > 0``: the ``k = max(1, round(f · n))`` clips whose names hash lowest
  (blake2b of the file name) are held out, never all of them (at least one clip stays for training),
  and none when the dataset has a single clip;
- otherwise none.

Hashing names (not shuffling with the seed) keeps a clip's fate when clips are added to the folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def name_rank(name: str) -> int:
    """A stable 64-bit number per file name (the hold-out order)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def held_out(names: Sequence[str], *, is_eval: bool = False, fraction: float = 0.0) -> set[int]:
    """Indices into ``names`` that are evaluation-only (see the module docstring)."""
    n = len(names)
    if is_eval:
        return set(range(n))
    if fraction <= 0 or n < 2:
        return set()
    k = min(n - 1, max(1, round(fraction * n)))
    order = sorted(range(n), key=lambda i: (name_rank(names[i]), names[i]))
    return set(order[:k])
