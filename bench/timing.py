"""The benchmarks' one timing helper: warm-up, interleaved repeats, median, ratio against a baseline.

    t = compare({"ours": lambda: fx.features(texts), "theirs": lambda: st.encode(texts)}, repeats=3)
    t.rate("ours", len(texts)), t.speedup("ours", "theirs")      # texts/s, and how many times faster

These machines are shared and noisy, so every candidate runs once untimed first (model and kernel warm-up, caches),
then the candidates take turns within each repeat (the order rotates from one repeat to the next), so a slow spell
slows all of them alike; each candidate's figure is the median of its repeats. ``once`` times a run that cannot be
repeated (a cold start, a stateful nightly run) and says so by its name.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Timing:
    """Seconds of every timed call per candidate (in repeat order) and each candidate's last result."""

    seconds: dict[str, list[float]]
    results: dict[str, Any] = field(repr=False)

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def rate(self, name: str, items: float) -> float:
        """``items`` per second at the median (texts/s, rows/s, queries/s)."""
        return items / self.median(name)

    def per_item(self, name: str, items: float) -> float:
        """Median seconds per item."""
        return self.median(name) / items

    def speedup(self, name: str, baseline: str, items: float = 1.0, baseline_items: float = 1.0) -> float:
        """How many times faster ``name`` is than ``baseline``: the ratio of their rates (items per median second;
        give each its item count when they timed different amounts of work)."""
        return self.rate(name, items) / self.rate(baseline, baseline_items)

    def shown(self, name: str) -> str:
        """'1.23 s (1.2, 1.23, 1.31)': the median and every repeat, for a report line."""
        return f"{self.median(name):.3g} s ({', '.join(f'{s:.3g}' for s in self.seconds[name])})"


def compare(candidates: Mapping[str, Callable[[], Any]], repeats: int = 3,
            warmup: int | Mapping[str, Callable[[], Any]] = 1) -> Timing:
    """Time each candidate ``repeats`` times, interleaved, after a warm-up.

    ``warmup``: untimed calls of each candidate before timing (0: none, for runs too long to repeat), or one warm-up
    callable per candidate (a cheaper call, e.g. on a slice). A candidate that must finish asynchronous work (CUDA)
    synchronises inside its callable.
    """
    if not candidates or repeats < 1:
        raise ValueError(f"compare needs at least one candidate and repeats >= 1 (got {len(candidates)}, {repeats})")
    names = list(candidates)
    results: dict[str, Any] = {}
    if isinstance(warmup, Mapping):
        for name in names:
            if name in warmup:
                warmup[name]()
    else:
        for _ in range(warmup):
            for name in names:
                results[name] = candidates[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            results[name] = candidates[name]()
            seconds[name].append(time.perf_counter() - t)
    return Timing(seconds, results)


def once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """One timed call, no warm-up and no repeat: for what cannot be repeated alike (cold starts, stateful runs,
    training runs too long to repeat). -> (seconds, result)."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out
