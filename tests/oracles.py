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


def brute_force_rescore(query_vectors: np.ndarray, candidates: np.ndarray, int8_rows: np.ndarray,
                        scales: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's candidates ranked one by one: every candidate's int8 bytes decoded by hand (signed byte x its
    scale), cosine with the query in float64, sorted by (-cosine, row) -> (rows int64[q, k], cosine float64[q, k])."""
    rows_out, cos_out = [], []
    for qv, cand in zip(np.asarray(query_vectors, np.float64), candidates):
        scored = []
        for r in cand:
            v = np.array([b - 256 if b > 127 else b for b in int8_rows[r].tolist()], np.float64) * \
                np.asarray(scales, np.float32).astype(np.float64)
            scored.append((-float(qv @ v) / max(np.linalg.norm(qv) * np.linalg.norm(v), 1e-24), int(r)))
        scored.sort()
        rows_out.append([r for _, r in scored[:k]])
        cos_out.append([-c for c, _ in scored[:k]])
    return np.array(rows_out, np.int64), np.array(cos_out, np.float64)
