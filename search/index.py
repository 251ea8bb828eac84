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
from encoder.schema import EMBEDDING, ID
from encoder.spec import FeatureSpec

from .kernels import neighbours_table, top_k

QueryCodes = Callable[[Sequence[str]], np.ndarray]
"""Query texts -> codes uint8[q, n_bytes] under the index's spec (``search.queries.QueryEncoder``)."""


@dataclass
class CodeIndex:
    """An in-memory index over a table's codes, for notebooks:

        index = CodeIndex.from_table("out/embed")
        index.search(["a query text"], k=10)      # a pyarrow Table: query, rank, id, hamming, similarity

    Rows are held in id order (ties go by id). ``encode`` turns query texts into codes; without it the index
    searches with codes only.
    """

    ids: pa.Array
    codes: np.ndarray                 # uint8[n, n_bytes]
    spec: FeatureSpec
    encode: QueryCodes | None = None
    run: str | None = None            # from_table: the id of the one published run the rows were read from

    def __post_init__(self) -> None:
        if self.spec.quantization != "binary":
            raise ValueError(f"Hamming search needs binary codes; this table is {self.spec.quantization}")
        order = pc.sort_indices(self.ids).to_numpy()
        if not np.array_equal(order, np.arange(len(order))):
            self.ids = self.ids.take(pa.array(order))
            self.codes = np.ascontiguousarray(self.codes[order])

    @classmethod
    def from_table(cls, folder: str | Path, model: str = "package") -> "CodeIndex":
        """Every row of a published embedding table (its spec checked on every file), read from the one run the
        folder points to when called (``run``), never a mix with a run published meanwhile; query texts are encoded
        by ``model`` under the table's spec."""
        from encoder.table import open_table

        from .queries import query_encoder

        table = open_table(folder)
        t = pq.read_table([str(f) for f in table.files], columns=[ID, EMBEDDING])
        return cls(t.column(ID).combine_chunks(), codes_from_column(t.column(EMBEDDING), table.spec.n_bytes),
                   table.spec, lambda texts: query_encoder(table.spec, model)(texts), table.run)

    def search(self, queries: Sequence[str] | np.ndarray, k: int = 10) -> pa.Table:
        """Texts (or codes uint8[q, n_bytes]) -> their k nearest rows: query, rank, id, hamming, similarity."""
        if isinstance(queries, np.ndarray):
            codes = queries
        elif self.encode is None:
            raise ValueError("this index has no query encoder: pass codes, or build it with CodeIndex.from_table")
        else:
            codes = self.encode(queries)
        rows, dist = top_k(codes, self.codes, k)
        return neighbours_table(np.arange(len(codes)), rows, dist, self.ids, self.spec.dim)
