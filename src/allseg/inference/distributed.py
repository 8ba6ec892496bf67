"""Rank and world size under ``torchrun`` (or SLURM through it), and a barrier.

Batch prediction shards its file list by rank; nothing here schedules work itself.
"""

from __future__ import annotations

import os

import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment; ``(0, 1)`` outside it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def shard(items: list, rank: int, world: int) -> list:
    """Every ``world``-th item from ``rank``: each item on exactly one rank, deterministic.

    >>> [shard(list(range(5)), r, 2) for r in range(2)]
    [[0, 2, 4], [1, 3]]
    """
    return items[rank::world]


def barrier() -> None:
    """Wait for every rank (gloo: works on CPU-only machines and across nodes)."""
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
