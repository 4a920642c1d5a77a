"""Batch samplers that shard across DDP ranks themselves (trainer: use_distributed_sampler=False).

Training: ``GroupedBatchSampler`` shuffles all images with a per-epoch seed, groups them
into batches of one aspect-ratio group (less padding in the detector's batch), and deals
the batches to ranks: disjoint shards, the same number of batches on every rank.
Evaluation: ``ShardSampler`` gives each rank a contiguous, deterministic slice with no
padding or duplicates, so metrics synced across ranks see every image exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def _check_rank(num_replicas: int, rank: int) -> None:
    if num_replicas < 1:
        raise ValueError(f"num_replicas={num_replicas}; allowed: >= 1")
    if not 0 <= rank < num_replicas:
        raise ValueError(
            f"rank={rank}; allowed: 0..{num_replicas - 1} (num_replicas={num_replicas})"
        )


def aspect_ratio_groups(
    aspect_ratios: Sequence[float], bins: Sequence[float] | None = None
) -> np.ndarray:
    """Group id per image from width/height: 0 landscape or square, 1 portrait; or, with
    ``bins`` (sorted ratio boundaries), the bin index ``0..len(bins)``."""
    ratios = np.asarray(aspect_ratios, dtype=np.float64)
    if bins is None:
        return (ratios < 1.0).astype(np.int64)
    edges = np.asarray(bins, dtype=np.float64)
    if np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins={list(bins)}; allowed: strictly increasing aspect ratios")
    return np.digitize(ratios, edges).astype(np.int64)


class EpochPermutation(Sampler[int]):
    """All indices ``0..n-1``, in a new seeded order each epoch (or in order if not shuffled).

    Every rank builds the same permutation from ``(seed, epoch)``. Lightning calls
    ``set_epoch`` before each epoch (it looks for ``batch_sampler.sampler.set_epoch``);
    without it, each ``iter()`` advances the epoch by one so orders still change.
    """

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0) -> None:
        self.n, self.shuffle, self.seed = int(n), bool(shuffle), int(seed)
        self.epoch = 0
        self.last_iterated: int | None = None  # the epoch whose order was handed out last

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[int]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.last_iterated = epoch
        return iter(self.permutation(epoch).tolist())

    def __len__(self) -> int:
        return self.n


class GroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of one group each, dealt round-robin to ``num_replicas`` ranks.

    Each epoch the shuffled indices fill one open batch per group; a batch is emitted when
    full. Leftover partial batches come last (or are dropped with ``drop_last``). Every rank
    takes ``len(self)`` batches: the total cut to a multiple of ``num_replicas`` (partial
    batches are cut first), so ranks never wait for each other and never share an image.

    Args:
        group_ids: int [N], e.g. ``aspect_ratio_groups(dataset.aspect_ratios)``.
        batch_size: images per batch (per rank).
        shuffle, seed: see ``EpochPermutation``; ``self.sampler`` carries ``set_epoch``.
        num_replicas, rank: the DDP world size and this process' rank.
        drop_last: drop the partial batches of each group.
    """

    def __init__(
        self,
        group_ids: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size}; allowed: >= 1")
        _check_rank(num_replicas, rank)
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.batch_size, self.num_replicas, self.rank = (
            int(batch_size),
            int(num_replicas),
            int(rank),
        )
        self.drop_last = bool(drop_last)
        self.sampler = EpochPermutation(len(self.group_ids), shuffle=shuffle, seed=seed)
        counts = np.unique(self.group_ids, return_counts=True)[1]
        full, partial = counts // self.batch_size, (counts % self.batch_size > 0)
        self._total = int(full.sum() + (0 if self.drop_last else partial.sum()))
        if self._total < self.num_replicas:
            raise ValueError(
                f"{len(self.group_ids)} images make {self._total} batches of {self.batch_size}, "
                f"fewer than the {self.num_replicas} ranks: lower batch_size or use more images"
            )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self._total // self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        open_batches: dict[int, list[int]] = {}
        batches: list[list[int]] = []
        for i in self.sampler:
            batch = open_batches.setdefault(int(self.group_ids[i]), [])
            batch.append(i)
            if len(batch) == self.batch_size:
                batches.append(batch)
                open_batches[int(self.group_ids[i])] = []
        if not self.drop_last:
            batches += [b for _, b in sorted(open_batches.items()) if b]
        assert len(batches) == self._total, (len(batches), self._total)
        return iter(batches[: len(self) * self.num_replicas][self.rank :: self.num_replicas])


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s contiguous slice of ``0..n-1`` in order: shards differ in length by
    at most one, and together hold every index exactly once (no padding)."""

    def __init__(self, n: int, *, num_replicas: int = 1, rank: int = 0) -> None:
        _check_rank(num_replicas, rank)
        if n < num_replicas:
            raise ValueError(
                f"{n} images cannot be sharded over {num_replicas} ranks without an empty shard"
            )
        self.start = rank * n // num_replicas
        self.stop = (rank + 1) * n // num_replicas

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
