"""The data order from metadata alone: epochs, weights, resolutions, bucket batches, sharding, replay."""

from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest
from wanlora.engine.data.order import DataOrder, SourceSpec


def spec(n: int, weight: float = 1.0, resolutions=(64,), bucket=lambda clip, r: (9, r, r)) -> SourceSpec:
    return SourceSpec(weight, tuple(resolutions), tuple(tuple(bucket(c, r) for r in resolutions) for c in range(n)))


def test_single_dataset_epoch_is_a_permutation_and_epochs_differ() -> None:
    o = DataOrder([spec(7)], seed=1)
    e0 = [c for _, c, _ in o.epoch_picks(0)]
    e1 = [c for _, c, _ in o.epoch_picks(1)]
    assert sorted(e0) == sorted(e1) == list(range(7))
    assert e0 != e1
    assert DataOrder([spec(7)], seed=1).epoch_picks(0) == o.epoch_picks(0)  # deterministic
    assert DataOrder([spec(7)], seed=2).epoch_picks(0) != o.epoch_picks(0)  # seed matters


def test_weights_share_samples_per_clip() -> None:
    # 4 clips at weight 1 and 8 at weight 0.25: per epoch 4 + 2 samples, fractions exact over epochs
    o = DataOrder([spec(4), spec(8, weight=0.25)], seed=0)
    counts = Counter(d for e in range(40) for d, _, _ in o.epoch_picks(e))
    assert counts == {0: 160, 1: 80}
    # the down-weighted dataset still cycles through all its clips
    seen = [c for e in range(4) for d, c, _ in o.epoch_picks(e) if d == 1]
    assert sorted(seen) == list(range(8))
    # fractional per-epoch counts (3 clips × 0.5 = 1.5/epoch) carry over without drift
    o2 = DataOrder([spec(2), spec(3, weight=0.5)], seed=0)
    assert Counter(d for e in range(10) for d, _, _ in o2.epoch_picks(e))[1] == 15


def test_every_clip_visits_every_resolution() -> None:
    o = DataOrder([spec(3, resolutions=(64, 128, 256))], seed=5)
    seen = Counter((r.clip_index, r.resolution) for r in islice(o.samples(), 9))
    assert seen == {(c, r): 1 for c in range(3) for r in (64, 128, 256)}


def test_batches_share_a_bucket_and_lose_no_sample() -> None:
    # clips alternate between two shapes: a batch of 3 must never mix them
    o = DataOrder([spec(10, bucket=lambda c, r: (9, 64, 64) if c % 2 else (9, 48, 80))], seed=3, batch_size=3)
    batches = list(islice(o.batches(), 20))
    assert [b.index for b in batches] == list(range(20))
    for b in batches:
        assert len(b.refs) == 3 and {r.bucket for r in b.refs} == {b.bucket}
    positions = sorted(r.position for b in batches for r in b.refs)
    assert len(set(positions)) == 60  # no sample twice
    assert positions[-1] < 66  # only a few left waiting in their bucket queue


def test_random_access_replays_the_same_batches() -> None:
    o = DataOrder([spec(5), spec(3, weight=2.0)], seed=9, batch_size=2)
    seq = list(islice(DataOrder([spec(5), spec(3, weight=2.0)], seed=9, batch_size=2).batches(), 30))
    assert o.batch(17) == seq[17]
    assert o.batch(3) == seq[3]  # going back replays from the start
    assert o.batch(29) == seq[29]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_interleave_the_global_sequence(world: int) -> None:
    ref = list(islice(DataOrder([spec(6)], seed=4).batches(), 12))
    got = {}
    for rank in range(world):
        for b in islice(DataOrder([spec(6)], seed=4).rank_batches(0, rank, world), 12 // world):
            got[b.index] = (rank, b)
    assert [got[i][1] for i in range(12)] == ref
    assert all(got[i][0] == i % world for i in range(12))


def test_sample_seeds_are_distinct_and_stable() -> None:
    a = [r.seed for r in islice(DataOrder([spec(4)], seed=0).samples(), 50)]
    b = [r.seed for r in islice(DataOrder([spec(4)], seed=0).samples(), 50)]
    assert a == b and len(set(a)) == 50


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        DataOrder([spec(0)], seed=0)
    with pytest.raises(ValueError):
        DataOrder([spec(2)], seed=0, batch_size=0)
    with pytest.raises(ValueError):
        next(DataOrder([spec(2)], seed=0).rank_batches(0, 2, 2))
