"""An in-memory index over a published table's codes, for notebooks (reads Parquet; the kernels do the work)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from encoder.quantize import codes_from_column
from encoder.schema import EMBEDDING, EMBEDDING_INT8, ID
from encoder.spec import FeatureSpec

from .kernels import neighbours_table, pair_hamming, rescore as rescore_rows, top_k

QueryCodes = Callable[[Sequence[str]], np.ndarray]
"""Query texts -> codes uint8[q, n_bytes] under the index's spec (``search.queries.QueryEncoder``)."""
QueryFeatures = Callable[[Sequence[str]], np.ndarray]
"""Query texts -> float32[q, dim] features under the index's spec (``QueryEncoder.features``), for rescoring."""
DEFAULT_CANDIDATES = 100
"""Binary candidates per query that rescoring re-ranks (the neighbours job's ``search.candidates``)."""


def no_rescore_column(what: str, setting: str) -> ValueError:
    """The one wording for 'rescoring asked of a table that has no int8 column'."""
    return ValueError(f"{setting} needs the {EMBEDDING_INT8} column, but {what} was embedded with output.rescore = "
                      "none; embed it with --set output.rescore=int8 (and output.mode=full over an existing table)")


@dataclass
class CodeIndex:
    """An in-memory index over a table's codes, for notebooks:

        index = CodeIndex.from_table("out/embed")
        index.search(["a query text"], k=10)      # a pyarrow Table: query, rank, id, hamming, similarity
        index.search(["a query text"], k=10, rescore=True)   # + cosine: the binary top-100 re-ranked by int8 cosine

    Rows are held in id order (ties go by id). ``encode`` turns query texts into codes and ``features`` into float
    features (rescoring needs them); without them the index searches with codes (and ``vectors``) only. ``int8``: the
    table's rescoring column (uint8[n, dim]), when it has one.
    """

    ids: pa.Array
    codes: np.ndarray                 # uint8[n, n_bytes]
    spec: FeatureSpec
    encode: QueryCodes | None = None
    run: str | None = None            # from_table: the id of the one published run the rows were read from
    int8: np.ndarray | None = None    # uint8[n, spec.rescore_bytes]: the embedding_int8 column, or None
    features: QueryFeatures | None = None

    def __post_init__(self) -> None:
        if self.spec.quantization != "binary":
            raise ValueError(f"Hamming search needs binary codes; this table is {self.spec.quantization}")
        if self.int8 is not None and self.int8.shape != (len(self.codes), self.spec.rescore_bytes):
            raise ValueError(f"int8 rows have shape {self.int8.shape}; expected ({len(self.codes)}, "
                             f"{self.spec.rescore_bytes}) under the spec")
        order = pc.sort_indices(self.ids).to_numpy()
        if not np.array_equal(order, np.arange(len(order))):
            self.ids = self.ids.take(pa.array(order))
            self.codes = np.ascontiguousarray(self.codes[order])
            if self.int8 is not None:
                self.int8 = np.ascontiguousarray(self.int8[order])

    @classmethod
    def from_table(cls, folder: str | Path, model: str = "package") -> "CodeIndex":
        """Every row of a published embedding table (its spec checked on every file), read from the one run the
        folder points to when called (``run``), never a mix with a run published meanwhile; query texts are encoded
        by ``model`` under the table's spec. The int8 column is read too when the table has one."""
        from encoder.table import open_table

        from .queries import query_encoder

        table = open_table(folder)
        spec = table.spec
        has_int8 = spec.rescore != "none"
        t = pq.read_table([str(f) for f in table.files], columns=[ID, EMBEDDING, *([EMBEDDING_INT8] * has_int8)])
        int8 = codes_from_column(t.column(EMBEDDING_INT8), spec.rescore_bytes) if has_int8 else None
        return cls(t.column(ID).combine_chunks(), codes_from_column(t.column(EMBEDDING), spec.n_bytes), spec,
                   lambda texts: query_encoder(spec, model)(texts), table.run, int8,
                   lambda texts: query_encoder(spec, model).features(texts))

    def search(self, queries: Sequence[str] | np.ndarray, k: int = 10, rescore: bool = False,
               candidates: int = DEFAULT_CANDIDATES, vectors: np.ndarray | None = None) -> pa.Table:
        """Texts (or codes uint8[q, n_bytes]) -> their k nearest rows: query, rank, id, hamming, similarity.

        ``rescore=True``: the ``candidates`` nearest by Hamming, re-ranked by the cosine of the query's float feature
        with each candidate's int8 vector (column ``cosine``; rank follows it, ties by id). Query codes given as an
        array need their float features in ``vectors`` (float[q, dim]) to be rescored."""
        if rescore and self.int8 is None:
            raise no_rescore_column("this table", "search(rescore=True)")
        if isinstance(queries, np.ndarray):
            codes = queries
            if rescore and vectors is None:
                raise ValueError("search(rescore=True) with query codes needs their float features: pass vectors=")
        elif self.encode is None:
            raise ValueError("this index has no query encoder: pass codes, or build it with CodeIndex.from_table")
        elif rescore or self.features is not None:
            if self.features is None:
                raise ValueError("search(rescore=True) needs the queries' float features: build the index with "
                                 "CodeIndex.from_table, or pass codes and vectors=")
            vectors = self.features(queries)
            codes = self.spec.encode_features(vectors)
        else:
            codes = self.encode(queries)
        if not rescore:
            rows, dist = top_k(codes, self.codes, k)
            return neighbours_table(np.arange(len(codes)), rows, dist, self.ids, self.spec.dim)
        if candidates < k:
            raise ValueError(f"candidates = {candidates} must be at least k = {k}")
        cand, _ = top_k(codes, self.codes, candidates)
        rows, cosine = rescore_rows(np.asarray(vectors), cand, self.int8, k, self.spec.decode_rescore)
        dist = pair_hamming(np.repeat(codes, rows.shape[1], axis=0), self.codes[rows.ravel()]).reshape(rows.shape)
        return neighbours_table(np.arange(len(codes)), rows, dist, self.ids, self.spec.dim, cosine)
