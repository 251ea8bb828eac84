"""Exact nearest neighbours and near-duplicates by Hamming distance over packed binary codes (no Spark; what an
analyst's notebook, the Spark neighbours job and the SQL ``hamming`` function run).

Distances of many queries against a block of codes are one lookup-table sum: for each byte position j and byte value
v, ``popcount(q[j] ^ v)`` is precomputed per query, so a code's distances to every query are the sum of 48 (one per
byte) table rows. That is one ``torch.embedding_bag`` call in fp16 (exact: integer sums below 2048), measured faster
than 64-bit XOR + popcount tables in numpy and than FAISS ``IndexBinaryFlat`` on 2 cores (``bench/search.py``).

Rescoring (``rescore``): a binary top-c re-ranked by the cosine of the query's float feature with fuller vectors of
the candidates only (the int8 column of a table embedded with ``output.rescore: int8``), the standard fix for the
binary code's reordering of close neighbours.

Ties are broken by id: corpora are held in id order, and among equal distances the lower row wins, so results are
exact and deterministic whatever the block size or the order the rows arrived in.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from encoder.schema import ID

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_POPCOUNT16 = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.uint8)
_FP16_EXACT_BITS = 2048   # fp16 holds every integer up to 2048 exactly: sums of wider codes go through fp32


def _words(codes: np.ndarray) -> np.ndarray:
    """uint8[n, n_bytes] -> uint64[n, ceil(n_bytes / 8)] (zero padded; zeros XOR to zero, so distances hold)."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    pad = (-codes.shape[1]) % 8
    if pad:
        codes = np.concatenate([codes, np.zeros((codes.shape[0], pad), np.uint8)], axis=1)
    return codes.view(np.uint64)


def pair_hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-aligned bit distances: uint8[n, n_bytes] x uint8[n, n_bytes] -> int32[n] (row i of a against row i of b).

    64-bit XOR and a 16-bit popcount table: what the SQL ``hamming(a, b)`` function and pair checks use."""
    if a.shape != b.shape:
        raise ValueError(f"hamming needs codes of the same shape; got {a.shape} and {b.shape}")
    x = np.bitwise_xor(_words(a), _words(b))
    return _POPCOUNT16[x.view(np.uint16)].sum(axis=1, dtype=np.int32)


class _QueryTable:
    """Per query set: the table T[j * 256 + v, q] = popcount(queries[q, j] ^ v), for ``embedding_bag`` sums."""

    def __init__(self, queries: np.ndarray):
        queries = np.ascontiguousarray(queries, dtype=np.uint8)
        self.n_bytes = queries.shape[1]
        dtype = torch.float16 if 8 * self.n_bytes < _FP16_EXACT_BITS else torch.float32
        v = np.arange(256, dtype=np.uint8)
        t = _POPCOUNT8[queries.T[:, None, :] ^ v[None, :, None]]                  # (n_bytes, 256, q)
        self.table = torch.from_numpy(np.ascontiguousarray(t.reshape(self.n_bytes * 256, len(queries)))).to(dtype)
        self.offsets = torch.arange(self.n_bytes, dtype=torch.int64) * 256

    def distances(self, codes: np.ndarray) -> torch.Tensor:
        """uint8[n, n_bytes] -> distances (n, q) as floats holding exact integers."""
        idx = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.uint8)).to(torch.int64) + self.offsets
        return F.embedding_bag(idx, self.table, mode="sum")


def hamming(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Bit distances of every query to every code: uint8[q, n_bytes] x uint8[n, n_bytes] -> int32[q, n]."""
    if queries.shape[1] != codes.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} bytes per code, the corpus {codes.shape[1]}")
    if len(queries) == 0 or len(codes) == 0:
        return np.zeros((len(queries), len(codes)), np.int32)
    return _QueryTable(queries).distances(codes).T.to(torch.int32).numpy()


def top_k(queries: np.ndarray, codes: np.ndarray, k: int, block_rows: int = 8192, query_batch: int = 256
          ) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of ``codes`` for each query -> (rows int64[q, k'], distances int32[q, k']), k' = min(k, n).

    Sorted by distance, ties by row: hold the corpus in id order and ties go by id. Each block's candidates are the
    rows strictly closer than the query's current k-th best (a later row never wins a tie), so after the first blocks
    only a handful of rows per query reach the exact merge.
    """
    n, nq = len(codes), len(queries)
    k = min(k, n)
    if k < 1 or nq == 0:
        return np.zeros((nq, 0), np.int64), np.zeros((nq, 0), np.int32)
    if queries.shape[1] != codes.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} bytes per code, the corpus {codes.shape[1]}")
    rows_out, dist_out = [], []
    for qs in range(0, nq, query_batch):
        r, d = _top_k_batch(_QueryTable(queries[qs:qs + query_batch]), codes, k, block_rows)
        rows_out.append(r)
        dist_out.append(d)
    return np.concatenate(rows_out), np.concatenate(dist_out)


def _top_k_batch(qt: _QueryTable, codes: np.ndarray, k: int, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(codes)
    nq = qt.table.shape[1]
    big = (8 * qt.n_bytes + 1) * n                           # key = distance * n + row, exact in int64
    best = np.full((nq, k), big, np.int64)                  # each query's k best keys, sorted
    bound = None                                            # the k-th best distance of each query, once k are found
    for start in range(0, n, block_rows):
        d = qt.distances(codes[start:start + block_rows])                 # (rows, nq)
        if bound is None:   # first block(s): the block's own k best per query, on a (distance, row) key
            nb = len(d)
            wide = torch.float64 if (8 * qt.n_bytes + 1) * nb >= 1 << 24 else torch.float32
            keys = d.to(wide) * nb + torch.arange(nb, dtype=wide)[:, None]
            r = keys.topk(min(k, nb), dim=0, largest=False).indices            # (k, nq)
            q = torch.arange(nq).expand_as(r)
            r, q = r.reshape(-1), q.reshape(-1)
        else:               # a later row never wins a tie, so only rows strictly closer than the k-th best
            r, q = torch.nonzero(d < bound, as_tuple=True)
            if len(r) == 0:
                continue
        keys = d[r, q].to(torch.int64).numpy() * n + (r.numpy() + start)
        best = _merge(best, q.numpy(), keys, k, big)
        if (best[:, -1] < big).all():
            bound = torch.from_numpy((best[:, -1] // n).astype(np.float32)[None, :]).to(qt.table.dtype)
    return best % n, (best // n).astype(np.int32)


def _merge(best: np.ndarray, q: np.ndarray, keys: np.ndarray, k: int, big: int) -> np.ndarray:
    """Each query's k smallest of its current best keys and its new candidate keys."""
    order = np.argsort(q, kind="stable")
    q, keys = q[order], keys[order]
    counts = np.bincount(q, minlength=len(best))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    merged = np.concatenate([best, np.full((len(best), int(counts.max())), big, np.int64)], axis=1)
    merged[q, k + np.arange(len(q)) - first[q]] = keys
    return np.sort(merged, axis=1)[:, :k]


_COSINE_ROWS = 2048   # rows per chunk: temporaries stay in cache (the per-row arithmetic does not depend on it)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-aligned cosine: float[n, d] x float[n, d] -> float64[n] (row i of a against row i of b; 0 for a zero row).

    The one cosine of rescoring: ``rescore``, the neighbours job and the Spark SQL ``int8_cosine`` all call it, in
    float64, so the same pair gets the same value (and the same rank) on every path: each row's value depends on that
    row alone (one ``einsum`` reduction per row), never on the chunk or batch it came in."""
    if a.shape != b.shape:
        raise ValueError(f"cosine needs vectors of the same shape; got {a.shape} and {b.shape}")
    out = np.empty(len(a), np.float64)
    for s in range(0, len(a), _COSINE_ROWS):
        x, y = np.asarray(a[s:s + _COSINE_ROWS], np.float64), np.asarray(b[s:s + _COSINE_ROWS], np.float64)
        norms = np.sqrt(np.einsum("nd,nd->n", x, x) * np.einsum("nd,nd->n", y, y))
        out[s:s + _COSINE_ROWS] = np.einsum("nd,nd->n", x, y) / np.maximum(norms, 1e-24)
    return out


def rescore(query_vectors: np.ndarray, candidates: np.ndarray, vectors: np.ndarray, k: int,
            decode: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank binary candidates by cosine on fuller vectors (sentence-transformers' binary search, rescored).

    query_vectors float[q, d] (the queries' float features); candidates int64[q, c], rows of ``vectors``: float[n, d],
    or stored rows such as the int8 column uint8[n, dim] with ``decode`` (``FeatureSpec.decode_rescore``), which is
    applied to the candidates' rows only, so nothing else of a large table is read
    -> (rows int64[q, k'], cosine float32[q, k']) with k' = min(k, c), by cosine descending, ties by row."""
    nq, c = candidates.shape
    if nq == 0 or c == 0:
        return np.zeros((nq, 0), np.int64), np.zeros((nq, 0), np.float32)
    query_vectors = np.asarray(query_vectors)
    cos = np.empty((nq, c), np.float64)
    step = max(1, _COSINE_ROWS // c)          # queries per chunk: gathered and decoded rows stay small
    for s in range(0, nq, step):
        picked = vectors[candidates[s:s + step].ravel()]
        cv = decode(picked) if decode is not None else picked
        cos[s:s + step] = cosine_rows(np.repeat(query_vectors[s:s + step], c, axis=0), cv).reshape(-1, c)
    order = np.lexsort((candidates, -cos), axis=1)[:, :k]
    return np.take_along_axis(candidates, order, 1), np.take_along_axis(cos, order, 1).astype(np.float32)


def neighbours_table(query: np.ndarray, rows: np.ndarray, dist: np.ndarray, ids: pa.Array, bits: int,
                     cosine: np.ndarray | None = None) -> pa.Table:
    """top_k's (or rescore's) result as rows: query, rank (from 1), id, hamming, similarity = 1 - hamming / bits, and
    ``cosine`` (the rescored similarity, float32) when given."""
    k = rows.shape[1]
    cols = {"query": pa.array(np.repeat(query, k)),
            "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), len(rows))),
            ID: ids.take(pa.array(rows.ravel())), "hamming": pa.array(dist.ravel().astype(np.int32)),
            "similarity": pa.array(similarity(dist.ravel(), bits))}
    if cosine is not None:
        cols["cosine"] = pa.array(cosine.ravel().astype(np.float32))
    return pa.table(cols)


def similarity(hamming_bits: np.ndarray, bits: int) -> np.ndarray:
    """1 - hamming / bits: 1.0 for identical codes, about 0.5 for unrelated ones (the one definition)."""
    return (1.0 - np.asarray(hamming_bits, np.float64) / bits).astype(np.float32)
