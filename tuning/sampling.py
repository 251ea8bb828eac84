"""Heterogeneous steps: which task and which row each example of a step comes from (seeded, deterministic)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


class TaskSampler:
    """Seeded heterogeneous steps: tasks by temperature, rows in reshuffled passes per task."""

    def __init__(self, sizes: Sequence[int], temperature: float, seed: int):
        w = np.asarray(sizes, np.float64) ** (1.0 / temperature)
        self.p = w / w.sum()
        self.rng = np.random.default_rng(seed)
        self.sizes = list(sizes)
        self.orders = [self.rng.permutation(n) for n in sizes]
        self.pos = [0] * len(sizes)

    def step(self, n: int) -> list[tuple[int, int]]:
        tasks = self.rng.choice(len(self.sizes), size=n, p=self.p)
        out = []
        for t in tasks:
            if self.pos[t] == self.sizes[t]:
                self.orders[t], self.pos[t] = self.rng.permutation(self.sizes[t]), 0
            out.append((int(t), int(self.orders[t][self.pos[t]])))
            self.pos[t] += 1
        return out
