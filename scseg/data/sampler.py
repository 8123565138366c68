"""The order of training samples: one epoch's indices from (seed, epoch), split over DDP ranks, resumable mid-epoch.

Why this module exists: the order in which training slices are drawn is part of what makes a run reproducible
(and a resumed run bit-identical to an uninterrupted one), so it is decided here, next to the data, by one
sampler that the data module's training loader always uses (`DataModule.train_loader`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Training sample indices of one epoch, drawn from ``np.random.default_rng([seed, epoch])``.

    ``num_samples=None`` gives one permutation of the dataset; an integer draws that many (concatenated
    permutations), which is how ``trainer.iters_per_epoch`` fixes the epoch length. Under DDP each rank takes
    every ``world_size``-th index of the same sequence, so the ranks together see exactly one epoch.
    ``set_epoch(epoch, start)`` skips this rank's first ``start`` indices: a resumed epoch never loads (nor
    augments) the samples it already trained on.
    """

    def __init__(self, size: int, seed: int, num_samples: int | None = None, rank: int = 0, world_size: int = 1):
        if size < 1:
            raise ValueError("the training dataset has no slices; check the data config and its split")
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        total = num_samples if num_samples is not None else size
        self.per_rank = math.ceil(total / world_size)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch; ``start``: how many of this rank's indices of it to skip (a resumed epoch)."""
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"start must be in [0, {self.per_rank}]; got {start}")
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        needed = self.per_rank * self.world_size
        perms = [rng.permutation(self.size) for _ in range(math.ceil(needed / self.size))]
        order = np.concatenate(perms)[:needed]
        return iter(order[self.rank :: self.world_size][self.start :].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start


__all__ = ["EpochSampler"]
