"""Long texts as overlapping windows: where the windows start, and how window features pool into one per text.

Pure functions over token lists and arrays. A text's content tokens (no special tokens) are cut into windows of
``content`` tokens every ``stride`` tokens until one reaches the end (the last one may be shorter, so a text costs
at most its tokens times content/stride, plus special tokens). A text shorter than one window is one window: exactly
the ids ``truncate`` gives it, and a long text's first window is its truncation. Each window is encoded with its own
special tokens; a text's feature is the mean of its window features weighted by the tokens each window adds (each
token counted once), L2-normalised again when the spec normalises.
"""
from __future__ import annotations

import numpy as np


def window_starts(n_content: int, content: int, stride: int, max_chunks: int) -> tuple[list[int], bool]:
    """Start offsets of the windows over ``n_content`` tokens -> (starts, cut by max_chunks).

    0, stride, 2*stride, ... until a window reaches the end. The cap keeps the first ``max_chunks`` windows, so the
    cost of a pathological text is bounded.
    """
    if content < 1 or not 1 <= stride <= content or max_chunks < 1:
        raise ValueError(f"windows need content >= 1, 1 <= stride <= content and max_chunks >= 1; got {content}, "
                         f"{stride}, {max_chunks}")
    starts = list(range(0, max(n_content - content, 0) + stride, stride)) if n_content > content else [0]
    return starts[:max_chunks], len(starts) > max_chunks


def window_weights(starts: list[int], content: int, n_content: int) -> np.ndarray:
    """Tokens each window adds beyond the previous one (its new tokens): float64[windows], summing to the tokens
    covered."""
    ends = np.minimum(np.asarray(starts, dtype=np.int64) + content, n_content)
    return np.diff(np.concatenate([[0], ends])).astype(np.float64)


def pool_windows(values: np.ndarray, owner: np.ndarray, weights: np.ndarray, n: int, normalize: bool) -> np.ndarray:
    """Window features float32[w, d] -> text features float32[n, d]: weighted mean over each text's windows.

    ``owner[k]`` is window k's text. A text with one window keeps that window's feature unchanged (bit for bit, so
    short texts get exactly what ``truncate`` gives them).
    """
    counts = np.bincount(owner, minlength=n)
    out = np.empty((n, values.shape[1]), dtype=np.float32)
    single = counts == 1
    first = np.full(n, -1, np.int64)
    first[owner[::-1]] = np.arange(len(owner))[::-1]        # each text's first window
    out[single] = values[first[single]]
    multi = np.flatnonzero(counts > 1)
    if len(multi):
        sel = np.isin(owner, multi)
        acc = np.zeros((n, values.shape[1]), dtype=np.float64)
        np.add.at(acc, owner[sel], values[sel].astype(np.float64) * weights[sel, None])
        tot = np.bincount(owner[sel], weights=weights[sel], minlength=n)
        pooled = acc[multi] / tot[multi, None]
        if normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        out[multi] = pooled.astype(np.float32)
    return out
