"""Resumable, shardable sample order and per-sample seeding: what makes resume and DDP exact.

Two rules make a run reproducible to the sample, whatever the number of DataLoader workers and wherever
it was interrupted:

1. The order of an epoch is a pure function of ``(seed, epoch)`` (:class:`ResumableSampler`); resuming at
   step ``s`` skips the first ``s * batch_size`` indices of this process's shard.
2. The augmentation of a sample is a pure function of ``(seed, epoch, index)``: :class:`SeededDataset`
   reseeds Python, NumPy and torch before each ``__getitem__`` (in whichever worker runs it).

The DataLoader is built once and its workers persist across epochs, so a worker's copy of the dataset never
sees a ``set_epoch`` made in the main process: the sampler (which runs in the main process) sends the epoch
with every index, as ``(epoch, index)`` pairs (``ResumableSampler(..., with_epoch=True)``).
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample of one epoch (SplitMix-style mixing, so nearby inputs differ widely)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
    x ^= x >> 32
    return int(x & 0xFFFFFFFF)


class SeededDataset(Dataset):
    """Wraps a dataset so each sample's random augmentation depends only on ``(seed, epoch, index)``."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        inner = getattr(self.dataset, "set_epoch", None)
        if callable(inner):
            inner(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int | tuple[int, int]) -> Any:
        """Sample ``index`` of the current epoch, or of ``epoch`` when given an ``(epoch, index)`` pair."""
        if isinstance(index, tuple):
            epoch, index = index
            if epoch != self.epoch:
                self.set_epoch(epoch)
        s = sample_seed(self.seed, self.epoch, int(index))
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        return self.dataset[index]

    def __getitems__(self, indices: list[Any]) -> list[Any]:
        # Defined so that DataLoader's batched fetch cannot reach a wrapped ``__getitems__`` (Subset has
        # one) through ``__getattr__`` and skip the per-sample seeding.
        return [self[i] for i in indices]

    def __getattr__(self, name: str) -> Any:
        # Forward plain attributes like ``schema`` to the wrapped dataset, never dunders.
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch shuffle, sharded over ``world_size`` processes, able to start mid-epoch.

    Every process sees ``len(dataset) // world_size`` indices (the remainder is dropped so all shards have
    the same number of steps, as DDP needs). With ``shuffle=False`` the order is 0, 1, 2... With
    ``with_epoch=True`` it yields ``(epoch, index)`` pairs for :class:`SeededDataset` in persistent workers.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 with_epoch: bool = False) -> None:
        if size < world_size:
            raise ValueError(f"dataset of {size} samples cannot be split over {world_size} processes")
        self.size = int(size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.with_epoch = with_epoch
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and skip its first ``start`` indices of this shard (resume)."""
        self.epoch = int(epoch)
        self.start = int(start)

    def shard(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        per_rank = self.size // self.world_size
        return order[self.rank : per_rank * self.world_size : self.world_size]

    def __iter__(self) -> Iterator[Any]:
        rest = self.shard()[self.start :]
        return iter([(self.epoch, i) for i in rest] if self.with_epoch else rest)

    def __len__(self) -> int:
        return max(0, self.size // self.world_size - self.start)
