"""Pure functions between Arrow batches and the embedding table; no I/O beyond reading a table's metadata."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .encode import FeatureExtractor
from .schema import EMBEDDING, ID, SPEC_METADATA_KEY
from .spec import FeatureSpec

SPARK_ROW_METADATA = b"org.apache.spark.sql.parquet.row.metadata"


def text_sha256(texts: Sequence[str]) -> list[str]:
    """Hex sha256 of each text's UTF-8 bytes: a stable content key to join back to the source or spot repeats."""
    return [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]


def encode_batch(batch: pa.RecordBatch, extractor: FeatureExtractor, spec: FeatureSpec, id_column: str,
                 text_column: str, passthrough: Sequence[str], schema: pa.Schema) -> pa.RecordBatch:
    """One input batch (id, text, passthrough...) -> one embedding-table batch with ``schema``, rows in order."""
    texts = batch.column(text_column).to_pylist()
    codes = extractor.encode(texts, spec)
    flat = pa.py_buffer(np.ascontiguousarray(codes.codes).tobytes())
    offsets = pa.py_buffer((np.arange(len(texts) + 1, dtype=np.int32) * spec.n_bytes).tobytes())
    emb = pa.Array.from_buffers(pa.binary(), len(texts), [None, offsets, flat])
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

