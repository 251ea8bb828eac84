"""The embedding table: Arrow batches in and out, and opening a published table (spec, manifest, data files).

Pure functions over batches, plus ``open_table``, which reads only metadata (footers and JSON), never the data.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .artifacts import ArtifactError
from .encode import FeatureExtractor
from .hashing import text_sha256
from .quantize import codes_to_column
from .schema import EMBEDDING, ID, SPEC_METADATA_KEY
from .spec import FeatureSpec

SPARK_ROW_METADATA = b"org.apache.spark.sql.parquet.row.metadata"
EMBEDDINGS_DIR, MANIFEST = "embeddings", "manifest.json"


class TableError(ArtifactError):
    """A published table is not what it promises (a file of another spec, repeated ids, a missing part)."""


@dataclass(frozen=True)
class PublishedTable:
    """A published embed output: its root folder, feature spec, manifest and data files (in name order)."""

    root: Path
    spec: FeatureSpec
    manifest: dict
    files: tuple[Path, ...]

    @property
    def data(self) -> Path:
        return self.root / EMBEDDINGS_DIR


def open_table(folder: str | Path) -> PublishedTable:
    """Open a published embedding folder: its spec, its manifest, and every data file checked to carry that spec.

    A Parquet file copied in from a table of another spec (even one with the same byte width) is refused here, by
    its footer's spec fingerprint, before any row is read.
    """
    root = Path(folder)
    if not (root / EMBEDDINGS_DIR).is_dir():
        raise TableError(f"embeddings = {str(folder)!r} is not a published embed output (no {EMBEDDINGS_DIR}/ folder)")
    try:
        spec = FeatureSpec.load(root)
    except (OSError, ValueError) as exc:
        raise TableError(f"{root}: {exc}") from None
    manifest_path = root / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    files = tuple(sorted((root / EMBEDDINGS_DIR).glob("*.parquet")))
    if not files:
        raise TableError(f"{root / EMBEDDINGS_DIR} holds no Parquet files")
    for f in files:
        try:
            found = spec_from_parquet(f).get("fingerprint")
        except ValueError as exc:
            raise TableError(str(exc)) from None
        if found != spec.fingerprint:
            raise TableError(f"{f} was written with feature spec {str(found)[:16]}…, but the table's spec is "
                             f"{spec.fingerprint[:16]}…; a file of another table was copied in")
    return PublishedTable(root, spec, manifest, files)


def encode_batch(batch: pa.RecordBatch, extractor: FeatureExtractor, spec: FeatureSpec, id_column: str,
                 text_column: str, passthrough: Sequence[str], schema: pa.Schema) -> pa.RecordBatch:
    """One input batch (id, text, passthrough...) -> one embedding-table batch with ``schema``, rows in order."""
    texts = batch.column(text_column).to_pylist()
    codes = extractor.encode(texts, spec)
    emb = codes_to_column(codes.codes)
    arrays = [batch.column(id_column).cast(schema.field(ID).type), emb, pa.array(text_sha256(texts), pa.string()),
              pa.array(codes.n_tokens, pa.int32()), pa.array(codes.truncated, pa.bool_())]
    arrays += [batch.column(c) for c in passthrough]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def spec_from_parquet(path: str | Path) -> dict:
    """Read the spec JSON that the embed job stored in a Parquet file's key-value metadata (Spark row metadata)."""
    meta = pq.read_metadata(str(path)).metadata or {}
    if SPARK_ROW_METADATA not in meta:
        raise ValueError(f"{path}: no Spark row metadata; not written by the embed job")
    for f in json.loads(meta[SPARK_ROW_METADATA])["fields"]:
        if f["name"] == EMBEDDING and SPEC_METADATA_KEY in f.get("metadata", {}):
            return json.loads(f["metadata"][SPEC_METADATA_KEY])
    raise ValueError(f"{path}: the embedding column carries no feature spec metadata")

