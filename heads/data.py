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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from encoder.hashing import id_bucket
from encoder.quantize import codes_from_column
from encoder.schema import EMBEDDING, ID
from encoder.spec import FeatureSpec

from .inputs import head_inputs
from .tasks import MISSING

# The joined training table: id, embedding, the label columns, and (optionally) this split column.
SPLIT = "split"
TRAIN, VALIDATION, TEST = "train", "validation", "test"   # 'train' trains, 'validation' chooses, 'test' reports


@dataclass(frozen=True)
class SplitRule:
    """How rows are assigned to train / validation / test.

    With a split column: its 'validation' rows validate and its 'test' rows are kept for the final figures. When
    that column has no validation rows (only train/test), or there is no split column, a deterministic hash of the
    id moves ``val_percent`` % of the training rows to validation (``hash_validation``).
    """

    column: str | None = SPLIT
    val_percent: int = 10
    hash_validation: bool = False


@dataclass
class Chunk:
    """Decoded rows: ids, head inputs float32[n, d], label columns int64[n] (-1 = missing), split flags."""

    ids: np.ndarray
    x: np.ndarray
    labels: dict[str, np.ndarray]
    is_val: np.ndarray
    is_test: np.ndarray | None = None   # None: no test rows

    def __post_init__(self) -> None:
        if self.is_test is None:
            self.is_test = np.zeros(len(self.ids), dtype=bool)

    def rows(self, mask: np.ndarray) -> "Chunk":
        """The rows where ``mask`` holds."""
        return Chunk(self.ids[mask], self.x[mask], {k: v[mask] for k, v in self.labels.items()}, self.is_val[mask],
                     self.is_test[mask])  # type: ignore[index]

    @staticmethod
    def concat(parts: Sequence["Chunk"]) -> "Chunk":
        return Chunk(np.concatenate([p.ids for p in parts]), np.concatenate([p.x for p in parts]),
                     {k: np.concatenate([p.labels[k] for p in parts]) for k in parts[0].labels},
                     np.concatenate([p.is_val for p in parts]), np.concatenate([p.is_test for p in parts]))


ChunkSource = Callable[[], Iterator[Chunk]]


def clean_labels(values: Sequence | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Nulls/NaN become -1 (missing); everything else int64."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return pc.fill_null(values.cast(pa.int64()), MISSING).to_numpy()
    arr = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(arr), MISSING, arr).astype(np.int64)


def assign_splits(ids: Sequence, split: Sequence | None, rule: SplitRule) -> tuple[np.ndarray, np.ndarray]:
    """-> (is_val bool[n], is_test bool[n]) under ``rule`` (see ``SplitRule``)."""
    n = len(ids)
    if split is None:
        return id_bucket(ids) < rule.val_percent, np.zeros(n, dtype=bool)
    s = np.asarray(split, dtype=object)
    is_test = s == TEST
    if rule.hash_validation:
        return (s != TEST) & (id_bucket(ids) < rule.val_percent), is_test
    return s == VALIDATION, is_test


def _parquet_files(path: str | Path) -> list[Path]:
    p = Path(path)
    files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no Parquet files under {p}")
    return files


def arrow_source(path: str | Path, spec: FeatureSpec, label_columns: Sequence[str], split: SplitRule = SplitRule()
                 ) -> ChunkSource:
    """Chunks of one row group each, files in name order, with pyarrow (codes read zero-copy from Arrow)."""
    files = _parquet_files(path)
    cols = [ID, EMBEDDING, *label_columns, *([split.column] if split.column else [])]

    def chunks() -> Iterator[Chunk]:
        for f in files:
            pf = pq.ParquetFile(f)
            for g in range(pf.num_row_groups):
                t = pf.read_row_group(g, columns=cols)
                ids = np.asarray(t.column(ID).to_pylist())
                is_val, is_test = assign_splits(ids, t.column(split.column).to_pylist() if split.column else None,
                                                split)
                yield Chunk(ids, head_inputs(spec, codes_from_column(t.column(EMBEDDING), spec.n_bytes)),
                            {c: clean_labels(t.column(c)) for c in label_columns}, is_val, is_test)
    return chunks


def petastorm_source(path: str | Path, spec: FeatureSpec, label_columns: Sequence[str],
                     split: SplitRule = SplitRule()) -> ChunkSource:
    """The same chunks streamed by petastorm: codes decoded in a TransformSpec, one row group at a time."""
    from petastorm import make_batch_reader
    from petastorm.transform import TransformSpec

    url = Path(path).absolute().as_uri()
    extra = [split.column] if split.column else []
    fields = [ID, EMBEDDING, *label_columns, *extra]

    def decode(pdf):  # pandas batch in, pandas batch out (only the selected fields)
        codes = codes_from_column(list(pdf[EMBEDDING]), spec.n_bytes)
        pdf["x"] = list(head_inputs(spec, codes))
        return pdf[[ID, "x", *label_columns, *extra]]

    transform = TransformSpec(decode, edit_fields=[("x", np.float32, (spec.dim,), False)],
                              removed_fields=[EMBEDDING])

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
                    ids = np.asarray(d[ID])
                    is_val, is_test = assign_splits(ids, d[split.column] if split.column else None, split)
                    yield Chunk(ids, np.asarray(d["x"], dtype=np.float32),
                                {c: clean_labels(d[c]) for c in label_columns}, is_val, is_test)
    return chunks
