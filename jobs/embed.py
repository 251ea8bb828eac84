"""Embed a text corpus once: Spark shards it over workers that run the shared encoder and write compact codes.

    python -m jobs.embed --config conf/embed.yaml [--set key=value ...]
    spark-submit jobs/embed.py --config conf/embed.yaml

Publishes ``output.path`` (a symlink to this run's folder) holding ``embeddings/`` (Parquet), ``quarantine/``
(Parquet, one row per held-back input row with its reason), ``feature_spec.json`` (+ ``.safetensors``) and
``manifest.json``. Nothing is published unless rows in = rows written + rows quarantined.
"""
from __future__ import annotations

import functools
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/embed.py: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa

from encoder.config import ConfigError
from encoder.model import load_encoder
from encoder.schema import SPEC_METADATA_KEY, TABLE_FORMAT_VERSION, embedding_schema, quarantine_schema
from encoder.settings import EncoderConfig
from encoder.spec import FeatureSpec
from jobs import publish
from jobs.common import SparkSettings, run_main, spark_session, versions
from jobs.tables import check_table, parquet_rows, write_table
from jobs.ingest import InputConfig, read_input

logger = logging.getLogger("jobs.embed")


@dataclass(frozen=True)
class OutputConfig(publish.PublishConfig):
    path: str = "out/embed"                  # git-ignored by default
    max_quarantine_fraction: float = 0.01    # above this share of bad rows the run fails and is not published

    def validate(self, source: str, prefix: str) -> None:
        super().validate(source, prefix)
        if not 0.0 <= self.max_quarantine_fraction <= 1.0:
            raise ConfigError(source, f"{prefix}max_quarantine_fraction",
                              f"= {self.max_quarantine_fraction}; expected 0..1")


@dataclass(frozen=True)
class EmbedConfig:
    input: InputConfig
    output: OutputConfig = field(default_factory=OutputConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    spark: SparkSettings = field(default_factory=SparkSettings)
    encode_partitions: int = 0   # encoding tasks (= embedding files); 0 = Spark's default parallelism


class QuarantineLimitError(RuntimeError):
    """Too many input rows were faulty; the run is not published."""


def _spark_schema(schema: pa.Schema, spec: FeatureSpec):
    """The pyarrow table schema rendered for Spark, with the spec on the embedding column's metadata (which Spark
    stores in each Parquet file's key-value metadata)."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    spec_meta = json.dumps(spec.to_json_dict() | {"fingerprint": spec.fingerprint,
                                                 "table_format_version": TABLE_FORMAT_VERSION}, sort_keys=True)
    fields = []
    for f in schema:
        meta = {SPEC_METADATA_KEY: spec_meta} if f.name == "embedding" else {}
        fields.append(StructField(f.name, from_arrow_type(f.type), f.nullable, meta))
    return StructType(fields)


def make_spec(cfg: EmbedConfig, valid_df, loaded) -> FeatureSpec:
    """Build this run's spec: reuse stored thresholds, or calibrate on a deterministic sample of the input."""
    extractor = cfg.encoder.extractor(loaded)
    q, mode = cfg.encoder.quantization, cfg.encoder.thresholds
    if cfg.encoder.thresholds_from:
        stored = FeatureSpec.load(cfg.encoder.thresholds_from)
        extractor.check_spec(stored)
        if stored.quantization != q or (q == "binary" and stored.threshold_mode != mode):
            raise ConfigError(cfg.encoder.thresholds_from, "encoder.thresholds_from", f"holds a "
                              f"{stored.quantization}/{stored.threshold_mode} spec; this run asks for {q}/{mode}")
        return stored
    if not cfg.encoder.needs_calibration:
        return extractor.make_spec(q, mode)
    from pyspark.sql import functions as F

    # Deterministic sample: the rows with the smallest hash of their id (bounded by calibration_rows).
    texts = [r[0] for r in valid_df.orderBy(F.xxhash64("_id"), "_id").select("_text")
             .limit(cfg.encoder.calibration_rows).collect()]
    logger.info("calibrating %s on %d sample rows", "int8 scales" if q == "int8" else "binary thresholds", len(texts))
    return extractor.make_spec(q, mode, extractor.features(texts).values)


def run(cfg: EmbedConfig) -> dict:
    """Run the job; returns the manifest. Raises (and publishes nothing) on any failure."""
    t0 = time.perf_counter()
    loaded = _driver_encoder(cfg.encoder.model)  # fails fast on a bad model, before Spark starts
    spark = spark_session(cfg.spark, "embed")
    from pyspark import StorageLevel

    # Marked once (the duplicate check is a shuffle) and reused by calibration, encoding, quarantine and counts.
    df = read_input(spark, cfg.input).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _run(cfg, spark, df, loaded, t0)
    finally:
        df.unpersist()


@functools.lru_cache(maxsize=1)
def _driver_encoder(model: str):
    """The driver's copy of the encoder (fingerprint, calibration); kept for later runs in the same process."""
    return load_encoder(model, device="cpu", threads=0)


def _run(cfg: EmbedConfig, spark, df, loaded, t0: float) -> dict:
    """Everything after reading: spec, encode, quarantine, checks, manifest, publish."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_type

    run_id, staging = publish.begin_run(cfg.output.path)
    logger.info("run %s staging in %s", run_id, staging)
    valid = df.where(F.col("_reason").isNull())
    spec = make_spec(cfg, valid, loaded)
    spec.save(staging)

    passthrough = pa.schema([pa.field(f.name, to_arrow_type(f.dataType)) for f in df.schema.fields
                             if f.name in cfg.input.passthrough])
    id_type = to_arrow_type(df.schema["_id"].dataType)
    schema = embedding_schema(id_type, passthrough)
    # One task per core: measured faster than 4 per core on local[2] (bench/encode.py), each task pays a start.
    parts = cfg.encode_partitions or spark.sparkContext.defaultParallelism
    fn = partial(_encode, cfg=cfg.encoder, spec=spec, passthrough=tuple(cfg.input.passthrough), schema=schema)
    encoded = (valid.select("_id", "_text", *cfg.input.passthrough)
               .repartition(parts, "_id").sortWithinPartitions("_id")   # deterministic batches -> same bytes
               .mapInArrow(fn, _spark_schema(schema, spec)))
    write_table(encoded, staging / "embeddings", cfg.output.compression)

    bad = (df.where(F.col("_reason").isNotNull())
           .select(F.col("_id").cast("string").alias("id"), F.col("_text").alias("text"),
                   F.col("_reason").alias("reason"), F.col("_source").alias("source"))
           .repartition(1).sortWithinPartitions("reason", "id", "source"))
    write_table(bad, staging / "quarantine", cfg.output.compression)

    rows_in = df.count()
    written, quarantined = parquet_rows(staging / "embeddings"), parquet_rows(staging / "quarantine")
    check_table(staging / "embeddings", schema)
    check_table(staging / "quarantine", quarantine_schema())
    emb = spark.read.parquet((staging / "embeddings").as_uri())
    stats = emb.agg(F.sum(F.col("truncated").cast("int")).alias("t"),
                    F.sum((F.length("embedding") != spec.n_bytes).cast("int")).alias("bad_len")).first()
    truncated, bad_len = int(stats["t"] or 0), int(stats["bad_len"] or 0)
    if bad_len:
        raise RuntimeError(f"{bad_len} embeddings are not {spec.n_bytes} bytes long; not publishing")
    if rows_in != written + quarantined:
        raise RuntimeError(f"rows in ({rows_in}) != written ({written}) + quarantined ({quarantined}); not publishing "
                           f"{staging}")
    reasons = {r["reason"]: r["n"] for r in spark.read.parquet((staging / "quarantine").as_uri())
               .groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()}
    fraction = quarantined / rows_in if rows_in else 0.0
    if fraction > cfg.output.max_quarantine_fraction:
        raise QuarantineLimitError(f"{quarantined} of {rows_in} rows ({fraction:.2%}) were quarantined, above "
                                   f"output.max_quarantine_fraction = {cfg.output.max_quarantine_fraction}; "
                                   f"reasons {reasons}; see {staging / 'quarantine'}; not published")
    manifest = {
        "table_format_version": TABLE_FORMAT_VERSION, "run_id": run_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {"path": cfg.input.path, "format": cfg.input.format, "id_column": cfg.input.id_column,
                  "text_column": cfg.input.text_column, "passthrough": list(cfg.input.passthrough)},
        "rows": {"in": rows_in, "written": written, "quarantined": quarantined, "truncated": truncated},
        "quarantine_reasons": dict(sorted(reasons.items())),
        "tables": {"embeddings": "embeddings", "quarantine": "quarantine"},
        "feature_spec": spec.to_json_dict() | {"fingerprint": spec.fingerprint},
        "seconds": round(time.perf_counter() - t0, 2),
        "versions": versions(), "encode_partitions": parts,
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    out = publish.publish(cfg.output.path, staging, cfg.output.keep_runs)
    logger.info("embed: rows_in=%d written=%d quarantined=%d truncated=%d seconds=%.1f output=%s run=%s spec=%s",
                rows_in, written, quarantined, truncated, manifest["seconds"], out, run_id, spec.fingerprint[:12])
    return manifest


def _encode(batches, cfg, spec, passthrough, schema):
    from jobs.worker import encode_partition

    return encode_partition(batches, cfg, spec, "_id", "_text", passthrough, schema)


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv, "embed", "conf/embed.yaml", EmbedConfig)


if __name__ == "__main__":
    sys.exit(main())
