"""Published tables, the one module: open a published folder, write and check Parquet, render schemas for Spark,
write manifests.

Every job reads its inputs and writes its outputs through these functions, so a table's checks (spec of every file,
unique ids, stable file names, schema, row counts) and a manifest's common facts are written once.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from encoder.schema import ID
from encoder.spec import FeatureSpec
from encoder.table import MANIFEST, PublishedRun, PublishedTable, TableError, open_table


@dataclass(frozen=True)
class EmbeddingsInput:
    """An opened embedding table: its published folder (spec, manifest, files) and a Spark DataFrame over it."""

    table: PublishedTable
    df: Any   # pyspark DataFrame

    @property
    def spec(self) -> FeatureSpec:
        return self.table.spec


def open_embeddings(spark, folder: str | Path | PublishedTable, columns: tuple[str, ...] = ()) -> EmbeddingsInput:
    """Open a published embedding table for a job: pinned to the run its folder points to now, every file's spec
    checked (``encoder.table.open_table``; pass its result to skip a second read of the footers) and its ids checked
    unique, as the table promises (one Spark aggregation over the id column). Spark reads only the listed files of
    that run folder, so a run published meanwhile never mixes in."""
    from pyspark.sql import functions as F

    from jobs.publish import hold_run

    table = folder if isinstance(folder, PublishedTable) else open_table(folder)
    hold_run(table.root)                       # not pruned by a newer publication while this job reads it
    df = spark.read.parquet(*[f.as_uri() for f in table.files])     # absolute paths inside the run folder
    dup = (df.groupBy(ID).agg(F.count(F.lit(1)).alias("n")).where("n > 1")
           .orderBy(ID).limit(1).collect())
    if dup:
        raise TableError(f"{table.data}: id {dup[0][ID]!r} occurs {dup[0]['n']} times; an embedding table holds "
                         "one row per id (was a data file copied in twice?)")
    return EmbeddingsInput(table, df.select(*columns) if columns else df)


def check_predictions_run(root: Path) -> tuple[dict, list[Path], int]:
    """A published predictions run folder: its manifest (present, JSON), its Parquet files and ``rows.out`` equal to
    their footers -> (manifest, files, rows); else ``TableError``."""
    from encoder.table import check_counts, read_manifest

    m = read_manifest(root)
    files = sorted((root / "predictions").glob("*.parquet"))
    if not files:
        raise TableError(f"{root / 'predictions'} holds no Parquet files")
    rows = m.get("rows")
    out = check_counts(root / MANIFEST, rows.get("out") if isinstance(rows, dict) else None, "rows.out",
                       root / "predictions", files)
    return m, files, out


def check_neighbours_run(root: Path) -> dict:
    """A published neighbours run folder: its manifest, and its ``search.rows`` / ``duplicates.pairs`` equal to the
    footers of ``search/`` / ``duplicates/`` -> the manifest; else ``TableError``."""
    from encoder.table import check_counts, read_manifest

    m = read_manifest(root)
    for key, count in (("search", "rows"), ("duplicates", "pairs")):
        if key in m:
            stated = m[key].get(count) if isinstance(m[key], dict) else None
            check_counts(root / MANIFEST, stated, f"{key}.{count}", root / key)
    return m


def input_runs(**reads: PublishedTable | PublishedRun) -> dict[str, dict[str, str]]:
    """The ``input_runs`` entry of a job's manifest: for each published output it read (by role, e.g.
    ``embeddings``, ``heads``, ``base``), the path it was given and the one run it was pinned to."""
    return {name: r.record() for name, r in reads.items()}


def run_before(pinned: PublishedRun) -> Path | None:
    """The published run before the one a reader pinned (``jobs.publish.previous_run``'s rule, but relative to the
    pinned run rather than to wherever the link points now), or None: e.g. ``predictions_prev`` beside
    ``predictions``, both from one resolution of the link."""
    from jobs.publish import previous_run, runs_dir

    root = runs_dir(pinned.path)
    if not root.is_dir() or pinned.root.parent != root.resolve():      # not a run folder of this output
        return None
    return previous_run(pinned.path, before=pinned.root)


def id_hash_column(col):
    """The split rule's id hash as a Spark column: the same int64 as ``encoder.hashing.id_hash`` (first 32 bits of
    sha256 over the id as text), with Spark's built-in functions only (no Python UDF)."""
    from pyspark.sql import functions as F

    return F.conv(F.substring(F.sha2(col.cast("string"), 256), 1, 8), 16, 10).cast("long")


def id_bucket_column(col):
    """``id_hash_column % ID_BUCKETS``: the bucket the split rule compares with ``val_percent`` (``encoder.hashing``)."""
    from encoder.hashing import ID_BUCKETS

    return id_hash_column(col) % ID_BUCKETS


def id_layout(df, schema: pa.Schema, partitions: int, field_metadata: dict[str, dict[str, str]] | None = None):
    """The one output layout of a keyed table: hash partitions of the id, sorted by id, typed exactly by ``schema``
    (an Arrow pass-through restores the non-null columns and field metadata a Parquet read loses). A full run, an
    incremental run and a rerun therefore write the same files."""
    return (df.repartition(max(partitions, 1), ID).sortWithinPartitions(ID)
            .mapInArrow(_same_rows, spark_schema(schema, field_metadata)))


def _same_rows(batches):
    yield from batches


def spark_schema(schema: pa.Schema, field_metadata: dict[str, dict[str, str]] | None = None):
    """A pyarrow schema rendered for Spark (the one conversion), with optional metadata per field name (Spark stores
    field metadata in every Parquet file's key-value metadata)."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    meta = field_metadata or {}
    return StructType([StructField(f.name, from_arrow_type(f.type), f.nullable, meta.get(f.name, {}))
                       for f in schema])


def arrow_type(spark_type) -> pa.DataType:
    """A Spark column type as pyarrow (the other direction of ``spark_schema``)."""
    from pyspark.sql.pandas.types import to_arrow_type

    return to_arrow_type(spark_type)


def write_table(df, path: Path, compression: str) -> None:
    """Write one Parquet table with Spark and give its files stable names (so reruns are byte-comparable)."""
    df.write.mode("errorifexists").option("compression", compression).parquet(path.as_uri())
    for i, f in enumerate(sorted(path.glob("part-*.parquet"))):
        suffix = f.name.split(".", 1)[1] if "." in f.name else "parquet"
        target = path / f"part-{i:05d}.{suffix}"
        crc = path / f".{f.name}.crc"
        f.rename(target)
        if crc.exists():
            crc.rename(path / f".{target.name}.crc")


def parquet_rows(path: Path | Sequence[Path]) -> int:
    """Row count from the Parquet footers (no data scan) of a table folder or a list of its files."""
    files = sorted(path.glob("*.parquet")) if isinstance(path, Path) else path
    return sum(pq.read_metadata(f).num_rows for f in files)


def check_table(path: Path, expected: pa.Schema) -> None:
    """The written files carry exactly the expected columns and types."""
    files = sorted(path.glob("*.parquet"))
    for f in files:
        got = pq.read_schema(f)
        if [(x.name, x.type) for x in got] != [(x.name, x.type) for x in expected]:
            raise RuntimeError(f"{f} has schema {got}; expected {expected}")


def versions() -> dict[str, str]:
    """Versions that decide the output bytes, recorded in every manifest."""
    import numpy
    import pyspark
    import torch
    import transformers

    import encoder

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "pyspark": pyspark.__version__, "pyarrow": pa.__version__,
            "numpy": numpy.__version__, "encoder": encoder.__version__}


def write_manifest(staging: Path, run_id: str, started: float, facts: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` into a run folder: the job's facts, then run id, time, seconds and versions."""
    manifest = {"run_id": run_id, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                **facts, "seconds": round(time.perf_counter() - started, 2), "versions": versions()}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
