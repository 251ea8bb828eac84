"""Exact nearest neighbours by Hamming distance over packed binary codes (plain numpy; what an analyst's notebook and
the Spark search job run).

Codes are XORed as 64-bit words and counted with a 16-bit popcount table, corpus block by block; each block keeps its
k best by one ``argpartition`` on a composite key (distance, then the id's rank in sorted order), so ties are broken
by id and the result does not depend on how the corpus was cut into blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .quantize import codes_from_column
from .schema import EMBEDDING, ID
from .spec import FeatureSpec

_POPCOUNT16 = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.uint8)


def _words(codes: np.ndarray) -> np.ndarray:
    """uint8[n, n_bytes] -> uint64[n, ceil(n_bytes / 8)] (zero padded; zeros XOR to zero, so distances hold)."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    pad = (-codes.shape[1]) % 8
    if pad:
        codes = np.concatenate([codes, np.zeros((codes.shape[0], pad), np.uint8)], axis=1)
    return codes.view(np.uint64)


def hamming(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Bit distances: uint8[q, n_bytes] x uint8[n, n_bytes] -> int32[q, n]."""
    qw, cw = _words(queries), _words(codes)
    out = np.empty((len(qw), len(cw)), np.int32)
    for i, q in enumerate(qw):
        x = np.bitwise_xor(cw, q[None, :])
        out[i] = _POPCOUNT16[x.view(np.uint16)].sum(axis=1, dtype=np.int32)
    return out


def top_k(queries: np.ndarray, codes: np.ndarray, id_rank: np.ndarray, k: int, block_rows: int = 262_144
          ) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest corpus rows of each query -> (rows int64[q, k'], distances int32[q, k']), k' = min(k, n).

    Sorted by distance, ties by ``id_rank`` (each row's position in the ids' sorted order), so results are exact and
    deterministic.
    """
    n = len(codes)
    k = min(k, n)
    if k < 1:
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.int32)
    best = np.zeros((len(queries), 0), np.int64)          # composite keys: distance * n + id rank
    for start in range(0, n, block_rows):
        d = hamming(queries, codes[start:start + block_rows]).astype(np.int64)
        keys = np.concatenate([best, d * n + id_rank[start:start + block_rows][None, :]], axis=1)
        if keys.shape[1] > k:
            keys = np.take_along_axis(keys, np.argpartition(keys, k - 1, axis=1)[:, :k], axis=1)
        best = keys
    best = np.sort(best, axis=1)
    order = np.argsort(id_rank)
    return order[best % n], (best // n).astype(np.int32)


@dataclass
class CodeIndex:
    """An in-memory index over a table's codes, for notebooks:

        index = CodeIndex.from_table("out/embed")
        index.search(["a query text"], k=10)      # a pyarrow Table: query, rank, id, hamming, similarity
    """

    ids: pa.Array
    codes: np.ndarray                 # uint8[n, n_bytes]
    spec: FeatureSpec
    model: str = "package"            # the encoder that encodes query texts (checked against the spec)

    def __post_init__(self) -> None:
        if self.spec.quantization != "binary":
            raise ValueError(f"Hamming search needs binary codes; this table is {self.spec.quantization}")
        ranks = np.empty(len(self.ids), np.int64)
        ranks[np.argsort(np.asarray(self.ids.to_pylist(), dtype=object), kind="stable")] = np.arange(len(self.ids))
        self._rank = ranks
        self._extractor = None

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
        if self._extractor is None:
            from .encode import FeatureExtractor
            from .encoder_config import EncoderConfig
            from .model import load_encoder

            s = self.spec
            cfg = EncoderConfig(model=self.model, layers=tuple(s.layers), layer_combine=s.layer_combine,  # type: ignore[arg-type]
                                pooling=s.pooling, normalize=s.normalize, max_length=s.max_length,  # type: ignore[arg-type]
                                long_text=s.long_text, chunk_tokens=s.chunk_tokens or 256,  # type: ignore[arg-type]
                                chunk_stride=s.chunk_stride or 224, max_chunks=s.max_chunks or 32, device="cpu")
            extractor = FeatureExtractor(load_encoder(self.model), cfg)
            extractor.check_spec(s)
            self._extractor = extractor
        return self.spec.encode_features(self._extractor.features(list(texts)).values)

    def search(self, queries: Sequence[str] | np.ndarray, k: int = 10) -> pa.Table:
        """Texts (or codes uint8[q, n_bytes]) -> their k nearest rows: query, rank, id, hamming, similarity."""
        codes = queries if isinstance(queries, np.ndarray) else self.encode(queries)
        rows, dist = top_k(codes, self.codes, self._rank, k)
        q = np.repeat(np.arange(len(codes)), rows.shape[1])
        bits = self.spec.dim
        return pa.table({"query": pa.array(q, pa.int32()), "rank": pa.array(np.tile(np.arange(rows.shape[1]) + 1,
                                                                                   len(codes)), pa.int32()),
                         ID: self.ids.take(pa.array(rows.ravel())), "hamming": pa.array(dist.ravel()),
                         "similarity": pa.array((1.0 - dist.ravel() / bits).astype(np.float32))})
