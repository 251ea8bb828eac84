"""Data parallel tuning (``world`` > 1, e.g. under Spark's TorchDistributor): every rank draws the same step, encodes
its slice, and gradients are summed across ranks before the step; rank 0's validation figures decide for all."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch import nn


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (RANK / WORLD_SIZE, as torchrun and TorchDistributor set)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@contextlib.contextmanager
def process_group(world: int, device: str) -> Iterator[None]:
    """Join the other processes for the run (gloo on CPU, NCCL on GPU); nothing to join when alone."""
    if world <= 1:
        yield
        return
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def sum_grads(params: list[nn.Parameter]) -> None:
    """Every rank's gradient becomes the sum over ranks (unused parameters count as zero)."""
    import torch.distributed as dist

    for p in params:
        dist.all_reduce(p.grad)


def sum_scalar(x: float) -> float:
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0])


def from_rank0(scores: dict[str, float], device: str) -> dict[str, float]:
    """Rank 0's figures on every rank, so every rank stops at the same step."""
    import torch.distributed as dist

    t = torch.tensor(list(scores.values()), dtype=torch.float64, device=device if device.startswith("cuda") else "cpu")
    dist.broadcast(t, src=0)
    return dict(zip(scores, t.cpu().tolist()))
