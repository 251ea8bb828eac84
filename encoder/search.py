"""Exact nearest neighbours and near-duplicates by Hamming distance over packed binary codes (no Spark; what an
analyst's notebook, the Spark neighbours job and the SQL ``hamming`` function run).

Distances of many queries against a block of codes are one lookup-table sum: for each byte position j and byte value
v, ``popcount(q[j] ^ v)`` is precomputed per query, so a code's distances to every query are the sum of 48 (one per
byte) table rows. That is one ``torch.embedding_bag`` call in fp16 (exact: integer sums below 2048), measured faster
than 64-bit XOR + popcount tables in numpy and than FAISS ``IndexBinaryFlat`` on 2 cores (``bench/search.py``).

Ties are broken by id: corpora are held in id order, and among equal distances the lower row wins, so results are
exact and deterministic whatever the block size or the order the rows arrived in.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from .quantize import codes_from_column
from .schema import EMBEDDING, ID
from .spec import FeatureSpec

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


def rescore(query_vectors: np.ndarray, candidates: np.ndarray, vectors: np.ndarray, k: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank binary candidates by cosine on fuller vectors (the way binary search is usually rescored).

    query_vectors float[q, d]; candidates int64[q, c] rows into ``vectors`` float[n, d] (e.g. an int8 table decoded
    by its spec) -> (rows int64[q, k], cosine float32[q, k]), ties by row."""
    qv = query_vectors / np.maximum(np.linalg.norm(query_vectors, axis=1, keepdims=True), 1e-12)
    cv = vectors[candidates]                                                     # (q, c, d)
    cos = np.einsum("qd,qcd->qc", qv, cv) / np.maximum(np.linalg.norm(cv, axis=2), 1e-12)
    order = np.lexsort((candidates, -cos), axis=1)[:, :k]
    return np.take_along_axis(candidates, order, 1), np.take_along_axis(cos, order, 1).astype(np.float32)


# -- near-duplicates ----------------------------------------------------------------------------------------------
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


# -- notebooks ------------------------------------------------------------------------------------------------------
@dataclass
class CodeIndex:
    """An in-memory index over a table's codes, for notebooks:

        index = CodeIndex.from_table("out/embed")
        index.search(["a query text"], k=10)      # a pyarrow Table: query, rank, id, hamming, similarity

    Rows are held in id order (ties go by id).
    """

    ids: pa.Array
    codes: np.ndarray                 # uint8[n, n_bytes]
    spec: FeatureSpec
    model: str = "package"            # the encoder that encodes query texts (checked against the spec)

    def __post_init__(self) -> None:
        if self.spec.quantization != "binary":
            raise ValueError(f"Hamming search needs binary codes; this table is {self.spec.quantization}")
        order = pc.sort_indices(self.ids).to_numpy()
        if not np.array_equal(order, np.arange(len(order))):
            self.ids = self.ids.take(pa.array(order))
            self.codes = np.ascontiguousarray(self.codes[order])

    @classmethod
    def from_table(cls, folder: str | Path, model: str = "package") -> "CodeIndex":
        """Every row of a published embedding table (its spec checked on every file)."""
        from .table import open_table

        table = open_table(folder)
        t = pq.read_table([str(f) for f in table.files], columns=[ID, EMBEDDING])
        return cls(t.column(ID).combine_chunks(), codes_from_column(t.column(EMBEDDING), table.spec.n_bytes),
                   table.spec, model)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Query texts -> codes under this table's spec; an encoder that would not reproduce the spec is refused."""
        return encode_queries(self.spec, self.model, texts)

    def search(self, queries: Sequence[str] | np.ndarray, k: int = 10) -> pa.Table:
        """Texts (or codes uint8[q, n_bytes]) -> their k nearest rows: query, rank, id, hamming, similarity."""
        codes = queries if isinstance(queries, np.ndarray) else self.encode(queries)
        rows, dist = top_k(codes, self.codes, k)
        return neighbours_table(np.arange(len(codes)), rows, dist, self.ids, self.spec.dim)


def encode_queries(spec: FeatureSpec, model: str, texts: Sequence[str]) -> np.ndarray:
    """Query texts -> codes the way ``spec``'s table was encoded; a ``model`` that would not reproduce the spec is
    refused (``SpecMismatchError``). The extractor is kept for the next call with the same spec."""
    key = (spec.fingerprint, model)
    if key not in _QUERY_ENCODERS:
        from .encode import FeatureExtractor
        from .model import load_encoder
        from .spec import SpecMismatchError

        loaded = load_encoder(model)
        if dict(loaded.fingerprint) != dict(spec.model):   # before its layers are even tried against the spec
            raise SpecMismatchError(f"query encoder {model!r} is model {loaded.fingerprint['name']} "
                                    f"({loaded.fingerprint['sha256'][:12]}…), but the table was encoded with model "
                                    f"{spec.model['name']} ({spec.model['sha256'][:12]}…); search with that model")
        extractor = FeatureExtractor(loaded, spec.encoder_config(model))
        extractor.check_spec(spec)
        _QUERY_ENCODERS.clear()
        _QUERY_ENCODERS[key] = extractor
    return spec.encode_features(_QUERY_ENCODERS[key].features(list(texts)).values)


_QUERY_ENCODERS: dict[tuple[str, str], object] = {}


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


def neighbours_table(query: np.ndarray, rows: np.ndarray, dist: np.ndarray, ids: pa.Array, bits: int) -> pa.Table:
    """top_k's result as rows: query, rank (from 1), id, hamming, similarity = 1 - hamming / bits."""
    k = rows.shape[1]
    return pa.table({"query": pa.array(np.repeat(query, k)),
                     "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), len(rows))),
                     ID: ids.take(pa.array(rows.ravel())), "hamming": pa.array(dist.ravel()),
                     "similarity": pa.array(similarity(dist.ravel(), bits))})


def similarity(hamming_bits: np.ndarray, bits: int) -> np.ndarray:
    """1 - hamming / bits: 1.0 for identical codes, about 0.5 for unrelated ones (the one definition)."""
    return (1.0 - np.asarray(hamming_bits, np.float64) / bits).astype(np.float32)
