"""Near-duplicates: every pair of codes within a radius, found through pigeonhole blocks and verified exactly
(pure functions over uint8[n, n_bytes] codes)."""
from __future__ import annotations

import numpy as np

from .kernels import pair_hamming

MIN_BLOCK_BITS = 8


def pigeonhole_blocks(n_bits: int, radius: int) -> list[tuple[int, int]]:
    """Bit ranges [start, stop) cutting a code into radius + 1 blocks: two codes within ``radius`` bits differ in at
    most ``radius`` blocks, so at least one block is identical (pigeonhole) and grouping by block value finds them.
    Bit-granular, so blocks stay ~n_bits / (radius + 1) bits wide (byte blocks would shrink to 1 byte at radius 24
    and put a 256th of the corpus in every group)."""
    top = n_bits // MIN_BLOCK_BITS - 1
    if not 0 <= radius <= top:
        raise ValueError(f"radius = {radius}; expected 0..{top} for {n_bits}-bit codes (radius + 1 blocks of at least "
                         f"{MIN_BLOCK_BITS} bits; with narrower blocks nearly every pair becomes a candidate: use a "
                         "search instead)")
    edges = np.linspace(0, n_bits, radius + 2).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def block_keys(codes: np.ndarray, blocks: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per block, each code's block value as fixed-width bytes (a void array: hashable, comparable, sortable)."""
    bits = np.unpackbits(np.ascontiguousarray(codes, dtype=np.uint8), axis=1)
    out = []
    for s, e in blocks:
        packed = np.packbits(bits[:, s:e], axis=1)
        out.append(np.ascontiguousarray(packed).view(f"V{packed.shape[1]}").ravel())
    return out


def candidate_pairs(codes: np.ndarray, radius: int) -> np.ndarray:
    """Row pairs (a < b) sharing at least one pigeonhole block: int64[m, 2], each pair once, sorted.

    Per block, rows are sorted by block value; rows d apart in that order with the same value are a pair, for
    d = 1, 2, ... until no group is that large: vectorised over all groups at once."""
    n = len(codes)
    found = []
    for keys in block_keys(codes, pigeonhole_blocks(8 * codes.shape[1], radius)):
        _, group = np.unique(keys, return_inverse=True)
        order = np.argsort(group, kind="stable")
        g = group[order]
        d = 1
        while d < n:
            same = g[d:] == g[:-d]
            if not same.any():
                break
            a, b = order[:-d][same], order[d:][same]
            found.append(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b))
            d += 1
    if not found:
        return np.zeros((0, 2), np.int64)
    flat = np.unique(np.concatenate(found))
    return np.stack([flat // n, flat % n], axis=1)


def near_duplicates(codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row pair within ``radius`` bits, found through pigeonhole blocks and verified exactly:
    (pairs int64[m, 2] with a < b, sorted; distances int32[m])."""
    pairs = candidate_pairs(codes, radius)
    d = pair_hamming(codes[pairs[:, 0]], codes[pairs[:, 1]]) if len(pairs) else np.zeros(0, np.int32)
    keep = d <= radius
    return pairs[keep], d[keep]


def first_shared_block(a: np.ndarray, b: np.ndarray, blocks: list[tuple[int, int]]) -> np.ndarray:
    """Row-aligned: the index of the first pigeonhole block in which a[i] and b[i] are identical (len(blocks) when
    none). A pair found through several blocks is kept only under this one, so each pair is reported once without a
    shuffle to deduplicate."""
    differ = np.unpackbits(np.bitwise_xor(a, b), axis=1).astype(bool)
    out = np.full(len(a), len(blocks), np.int32)
    for j in reversed(range(len(blocks))):
        s, e = blocks[j]
        out[~differ[:, s:e].any(axis=1)] = j
    return out
