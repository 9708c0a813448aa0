"""Epoch sampling: class balancing (none / sqrt / equal), rare-class copies, per-item seeds for exact resume."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

BALANCE_MODES = ("none", "sqrt", "equal")


def class_balance_weights(labels: Sequence[str], copies: Sequence[int], mode: str) -> np.ndarray:
    """Per-row sampling weights that rebalance classes (TECHNIQUES.md S2).

    Rare-class copies (``clean.rare_copies``) count under every mode: ``none`` and ``sqrt`` count each copy as a
    row, and ``equal`` multiplies a class's share by its copies (a rare class with 2 copies gets twice the mass of
    a common one), so ``balance: equal`` does not cancel them.

    Args:
        labels: primary label of each row.
        copies: times each row counts (rare-class duplication from the clean stage; the same for a class's rows).
        mode: ``none`` (rows as they are), ``sqrt`` (class mass proportional to the square root of its row count,
            copies included) or ``equal`` (every class the same mass times its copies: the mean copies of its rows).

    Returns:
        (rows,) float64 weights summing to 1; within a class, a row's weight is proportional to its copies.
    """
    if mode not in BALANCE_MODES:
        raise ValueError(f"balance must be one of {BALANCE_MODES}, not {mode!r}")
    labels = np.asarray(labels)
    w = np.asarray(copies, dtype=np.float64)
    if mode != "none":
        uniq, inverse = np.unique(labels, return_inverse=True)
        mass = np.bincount(inverse, weights=w, minlength=len(uniq))
        rows = np.bincount(inverse, minlength=len(uniq))
        target = np.sqrt(mass) if mode == "sqrt" else mass / rows  # equal: the class's copies per row
        w = w * (target / mass)[inverse]
    return w / w.sum()


def item_seed(seed: int, epoch: int, position: int) -> int:
    """A seed for one item of one epoch, independent of worker count or a resume in the middle of the epoch."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class EpochSampler:
    """Yields ``(row, item_seed)`` pairs for one epoch, drawn with replacement from the row weights.

    The order depends only on (seed, epoch), so an interrupted epoch resumes at the same place, and under
    torch.distributed every rank reads its own slice of each global batch (a distributed weighted sampler:
    the ranks together see exactly the items one process would).

    Args:
        weights: (rows,) sampling weights summing to 1.
        num_samples: items per epoch (a multiple of ``batch_size``).
        seed: base seed.
        batch_size: global batch size (all ranks together).
        rank: this process's rank.
        world: number of processes; ``batch_size`` must be divisible by it.
    """

    def __init__(
        self, weights: np.ndarray, num_samples: int, seed: int, batch_size: int = 1, rank: int = 0, world: int = 1
    ) -> None:
        if batch_size % world:
            raise ValueError(f"global batch size {batch_size} is not divisible by the {world} processes")
        self.weights = np.asarray(weights, dtype=np.float64)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.batch_size, self.rank, self.world = int(batch_size), int(rank), int(world)
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to draw, and how many of its global batches were already consumed."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def rows(self) -> np.ndarray:
        """The full (all ranks) row order of the current epoch, (num_samples,) int64."""
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.choice(len(self.weights), size=self.num_samples, replace=True, p=self.weights)

    def positions(self) -> np.ndarray:
        """Epoch positions this rank reads, in order, from ``start_batch`` on."""
        local = self.batch_size // self.world
        batches = np.arange(self.start_batch, self.num_samples // self.batch_size)
        offsets = self.rank * local + np.arange(local)
        return (batches[:, None] * self.batch_size + offsets[None, :]).reshape(-1)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rows = self.rows()
        for pos in self.positions():
            yield int(rows[pos]), item_seed(self.seed, self.epoch, int(pos))

    def __len__(self) -> int:
        return len(self.positions())
