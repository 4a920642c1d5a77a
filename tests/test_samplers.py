"""Samplers, tested rank by rank without processes: DDP sharding is a pure function of (rank, world)."""

from __future__ import annotations

import numpy as np
import pytest

from src.data.samplers import (
    EpochPermutation,
    GroupedBatchSampler,
    ShardSampler,
    aspect_ratio_groups,
)


def ratios(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice([0.75, 1.0, 1.33, 1.5, 0.66], n)


def test_aspect_ratio_groups() -> None:
    assert aspect_ratio_groups([1.5, 1.0, 0.5, 0.99]).tolist() == [0, 0, 1, 1]
    assert aspect_ratio_groups([0.4, 0.8, 1.2, 3.0], bins=[0.5, 1.0, 2.0]).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="bins"):
        aspect_ratio_groups([1.0], bins=[1.0, 0.5])


def test_batches_hold_one_group_and_cover_every_image_once() -> None:
    groups = aspect_ratio_groups(ratios(53))
    sampler = GroupedBatchSampler(groups, 4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(53))
    assert all(len(set(groups[b].tolist())) == 1 for b in batches)
    assert all(1 <= len(b) <= 4 for b in batches)
    assert sum(len(b) < 4 for b in batches) <= 2  # at most one partial batch per group


def test_epochs_reshuffle_deterministically() -> None:
    groups = aspect_ratio_groups(ratios(40))
    a, b = GroupedBatchSampler(groups, 4, seed=7), GroupedBatchSampler(groups, 4, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)  # same (seed, epoch): same order, on any rank or process
    c = GroupedBatchSampler(groups, 4, seed=7)
    c.set_epoch(3)
    epoch3 = list(c)
    epoch4 = list(c)  # without set_epoch the next iter() is the next epoch
    assert epoch3 != epoch4
    c.set_epoch(3)
    assert list(c) == epoch3
    assert list(GroupedBatchSampler(groups, 4, seed=8)) != list(
        GroupedBatchSampler(groups, 4, seed=7)
    )


def test_unshuffled_permutation_is_identity() -> None:
    perm = EpochPermutation(5, shuffle=False)
    assert list(perm) == list(range(5)) == list(perm)


@pytest.mark.parametrize(
    ("n", "batch_size", "world"), [(53, 4, 2), (53, 3, 4), (9, 2, 3), (100, 8, 8)]
)
def test_ranks_get_disjoint_shards_of_equal_length(n: int, batch_size: int, world: int) -> None:
    groups = aspect_ratio_groups(ratios(n, seed=n))
    per_rank = []
    for rank in range(world):
        sampler = GroupedBatchSampler(groups, batch_size, seed=5, num_replicas=world, rank=rank)
        sampler.set_epoch(2)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        per_rank.append(batches)
    assert len({len(b) for b in per_rank}) == 1  # the same number of steps on every rank
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == len(set(seen))  # disjoint
    # only the tail batches that cannot be dealt evenly are left out (at most world - 1)
    single = GroupedBatchSampler(groups, batch_size, seed=5)
    assert len(single) - world < len(per_rank[0]) * world <= len(single)


def test_too_few_batches_for_the_ranks_is_an_error() -> None:
    with pytest.raises(ValueError, match="fewer than the 4 ranks"):
        GroupedBatchSampler([0, 0, 1], 2, num_replicas=4, rank=0)
    with pytest.raises(ValueError, match="rank=2"):
        GroupedBatchSampler([0, 0, 1], 2, num_replicas=2, rank=2)


def test_drop_last_drops_partial_batches() -> None:
    sampler = GroupedBatchSampler([0] * 7 + [1] * 5, 3, drop_last=True)
    assert len(sampler) == 3 and all(len(b) == 3 for b in sampler)


@pytest.mark.parametrize(("n", "world"), [(80, 3), (5, 5), (7, 2), (1, 1)])
def test_eval_shards_cover_every_image_exactly_once(n: int, world: int) -> None:
    shards = [list(ShardSampler(n, num_replicas=world, rank=r)) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))  # in order, no padding
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [list(ShardSampler(n, num_replicas=world, rank=r)) for r in range(world)]
    with pytest.raises(ValueError, match="empty shard"):
        ShardSampler(2, num_replicas=3, rank=0)
