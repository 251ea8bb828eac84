"""Feeding heads from Parquet: a joined table (id, embedding, label columns, split) read in chunks.

Two readers give the same chunks: a plain pyarrow reader for tables that fit comfortably, and petastorm
(``make_batch_reader`` with a transform that decodes the codes) so a table larger than memory streams. Both decode
with the encoder library's inverse (``FeatureSpec.decode``), so a head sees exactly what the table holds.
petastorm stays at 0.12.1: 0.13.1's thread pool silently loses rows (../shared/STACK.md, P3).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq

from encoder.quantize import codes_from_column
from encoder.spec import FeatureSpec

from .tasks import MISSING

VALIDATION = "validation"


@dataclass
class Chunk:
    """Decoded rows: ids, features float32[n, d], label columns int64[n] (-1 = missing), validation flags."""

    ids: np.ndarray
    x: np.ndarray
    labels: dict[str, np.ndarray]
    is_val: np.ndarray


ChunkSource = Callable[[], Iterator[Chunk]]


def clean_labels(values: Sequence) -> np.ndarray:
    """Nulls/NaN become -1 (missing); everything else int64."""
    arr = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(arr), MISSING, arr).astype(np.int64)


def validation_flags(ids: Sequence, split: Sequence | None, val_percent: int) -> np.ndarray:
    """The data's own split when it has one (split == 'validation'), else a deterministic hash split on id."""
    if split is not None:
        return np.asarray([s == VALIDATION for s in split], dtype=bool)
    import pandas as pd

    h = pd.util.hash_array(np.asarray([str(i) for i in ids], dtype=object), categorize=False)
    return (h % np.uint64(100)) < np.uint64(val_percent)


def _parquet_files(path: str | Path) -> list[Path]:
    p = Path(path)
    files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no Parquet files under {p}")
    return files


def arrow_source(path: str | Path, spec: FeatureSpec, label_columns: Sequence[str], split_column: str | None,
                 val_percent: int = 10) -> ChunkSource:
    """Chunks of one row group each, files in name order, with pyarrow."""
    files = _parquet_files(path)
    cols = ["id", "embedding", *label_columns, *([split_column] if split_column else [])]

    def chunks() -> Iterator[Chunk]:
        for f in files:
            pf = pq.ParquetFile(f)
            for g in range(pf.num_row_groups):
                t = pf.read_row_group(g, columns=cols).to_pydict()
                yield _chunk(t["id"], codes_from_column(t["embedding"], spec.n_bytes), spec,
                             {c: t[c] for c in label_columns}, t.get(split_column) if split_column else None,
                             val_percent)
    return chunks


def petastorm_source(path: str | Path, spec: FeatureSpec, label_columns: Sequence[str], split_column: str | None,
                     val_percent: int = 10) -> ChunkSource:
    """The same chunks streamed by petastorm: codes decoded in a TransformSpec, one row group at a time."""
    from petastorm import make_batch_reader
    from petastorm.transform import TransformSpec

    url = Path(path).absolute().as_uri()
    fields = ["id", "embedding", *label_columns, *([split_column] if split_column else [])]

    def decode(pdf):  # pandas batch in, pandas batch out (only the selected fields)
        codes = codes_from_column(list(pdf["embedding"]), spec.n_bytes)
        pdf["x"] = list(spec.decode(codes))
        return pdf[["id", "x", *label_columns, *([split_column] if split_column else [])]]

    transform = TransformSpec(decode, edit_fields=[("x", np.float32, (spec.dim,), False)],
                              removed_fields=["embedding"])

    def chunks() -> Iterator[Chunk]:
        with warnings.catch_warnings():
            # petastorm 0.12.1 calls pyarrow 14's deprecated legacy-dataset API (../shared/STACK.md, P12): hundreds
            # of FutureWarnings per epoch that say nothing about our data.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\.|$)")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"petastorm(\.|$)")
            reader = make_batch_reader(url, schema_fields=fields, transform_spec=transform, num_epochs=1,
                                       shuffle_row_groups=False, reader_pool_type="dummy")  # one thread, in order
            with reader:
                for b in reader:
                    d = b._asdict()
                    yield Chunk(np.asarray(d["id"]), np.asarray(d["x"], dtype=np.float32),
                                {c: clean_labels(d[c]) for c in label_columns},
                                validation_flags(d["id"], d[split_column] if split_column else None, val_percent))
    return chunks


def _chunk(ids, codes, spec, labels, split, val_percent) -> Chunk:
    return Chunk(np.asarray(ids), spec.decode(codes), {c: clean_labels(v) for c, v in labels.items()},
                 validation_flags(ids, split, val_percent))
