"""Brute-force references the tests (and the search benchmark) check the fast kernels against."""
from __future__ import annotations

import numpy as np

from search.kernels import hamming


def brute_force_pairs(codes: np.ndarray, radius: int, block_rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The same pairs by comparing all of them (the reference the tests and the benchmark check against)."""
    out, dist = [], []
    for s in range(0, len(codes), block_rows):
        d = hamming(codes[s:s + block_rows], codes)
        a, b = np.nonzero(d <= radius)
        a = a + s
        keep = a < b
        out.append(np.stack([a[keep], b[keep]], axis=1))
        dist.append(d[a[keep] - s, b[keep]])
    pairs = np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), np.int64)
    dd = np.concatenate(dist).astype(np.int32) if dist else np.zeros(0, np.int32)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order], dd[order]
