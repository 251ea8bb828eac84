"""Apply every trained head to an embedding table in one pass and publish a predictions table.

    python -m jobs.apply_heads --config conf/apply_heads.yaml [--set key=value ...]

Publishes ``output.path`` -> a run folder with ``predictions/`` (Parquet, one row per input id; schema in
``heads/predict.py`` and docs/heads.md), ``manifest.json`` (rows, heads, label orders, spec) and ``report.md`` (rows per
predicted label and score histograms, with one ``task_<name>.png`` per task; ``jobs/prediction_report.py``). Rows in =
rows out is checked before publishing.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa

from encoder.schema import CORE_COLUMNS, EMBEDDING, ID
from encoder.table import TableError, open_table, published_run, read_manifest
from heads.io import heads_fingerprint, load_heads
from heads.predict import PREDICTIONS_FORMAT_VERSION, predictions_schema, task_columns
from jobs import publish
from jobs.common import SparkSettings, run_main, spark_session
from jobs.prediction_report import write_report
from jobs.errors import InputError
from jobs.tables import EmbeddingsInput, arrow_type, check_table, id_layout, input_runs, open_embeddings, \
    parquet_rows, spark_schema, write_manifest, write_table

logger = logging.getLogger("jobs.apply_heads")


@dataclass(frozen=True)
class ApplyHeadsConfig:
    embeddings: str = "out/embed"            # the embed job's published folder
    heads: str = "out/heads"                 # the train_heads job's published folder (one sub-folder per task)
    output: publish.PublishConfig = field(default_factory=lambda: publish.PublishConfig(path="out/predictions"))
    # incremental: when the heads are the same (heads_fingerprint) as the published predictions', only rows whose
    # code changed since the embedding table those predictions came from are scored; the rest are carried over
    mode: Literal["full", "incremental"] = "full"
    # 8,192-row Arrow batches: scoring cost per batch is mostly per-row work; small batches pay per-call overheads
    spark: SparkSettings = field(default_factory=lambda: SparkSettings(arrow_batch_rows=8192))


@publish.writes_output(lambda cfg: cfg.output.path)   # a read-only or full output is OutputError (exit 9)
def run(cfg: ApplyHeadsConfig) -> dict:
    t0 = time.perf_counter()
    table = open_table(cfg.embeddings)       # pinned: one run's files, read whole whatever is published meanwhile
    spec = table.spec
    heads_run = published_run(cfg.heads)      # likewise one heads run: loaded here, scored by the workers
    heads_dir = heads_run.root
    publish.hold_run(heads_dir)             # the workers load the heads from this run: not pruned meanwhile
    heads = load_heads(heads_dir, spec)     # a head of another feature spec is refused here, before Spark starts
    spark = spark_session(cfg.spark, "apply_heads")
    full = open_embeddings(spark, table)
    # the embedding table's passthrough columns (split, dates, the text when the embed job kept it) ride along
    passthrough = [f for f in full.df.schema.fields if f.name not in CORE_COLUMNS]
    emb = EmbeddingsInput(table, full.df.select(ID, EMBEDDING, *[f.name for f in passthrough]))
    try:
        schema = predictions_schema(heads, arrow_type(emb.df.schema[ID].dataType),
                                    pa.schema([pa.field(f.name, arrow_type(f.dataType)) for f in passthrough]))
    except ValueError as exc:
        raise InputError(f"{cfg.heads} on {cfg.embeddings}: {exc}") from None
    run_id, staging = publish.begin_run(cfg.output.path)
    fn = partial(_score, heads_dir=str(heads_dir), spec=spec, schema=schema)
    fingerprint = heads_fingerprint(heads_dir)
    base = previous_predictions(cfg, fingerprint, spec.fingerprint)
    joined = None
    if base is None:
        scored, delta = emb.df.mapInArrow(fn, spark_schema(schema)), None
    else:
        scored, delta, joined = rescore_changed(spark, emb.df, base, fn, schema)
    write_table(layout(scored, schema, len(table.files)), staging / "predictions", cfg.output.compression)
    if joined is not None:
        joined.unpersist()
    rows_in = parquet_rows(emb.table.files)
    rows_out = parquet_rows(staging / "predictions")
    check_table(staging / "predictions", schema)
    write_report(spark.read.parquet((staging / "predictions").as_uri()), heads, staging)
    if rows_in != rows_out:
        raise TableError(f"{table.root}: rows in ({rows_in}) != rows out ({rows_out}); the embedding table changed "
                         f"under the job or a file of it is unreadable; not publishing {staging}")
    manifest = write_manifest(staging, run_id, t0, {
        "predictions_format_version": PREDICTIONS_FORMAT_VERSION,
        "embeddings": str(table.root), "heads": str(heads_dir),
        "input_runs": input_runs(embeddings=table, heads=heads_run),
        "rows": {"in": rows_in, "out": rows_out},
        "passthrough": [f.name for f in passthrough],
        "tasks": {h.task.name: {"kind": h.task.kind, "labels": h.labels,
                                "columns": list(task_columns(h.task.name, h.task.kind)),
                                **({"positive_label": h.labels[1]} if h.task.kind == "binary" else {})}
                  for h in heads},
        "feature_spec_fingerprint": spec.fingerprint, "heads_fingerprint": fingerprint,
        **({"incremental": delta} if delta else {})})
    out = publish.publish(cfg.output.path, staging, cfg.output.keep_runs)
    logger.info("apply_heads: heads=%d rows_in=%d rows_out=%d seconds=%.1f output=%s run=%s", len(heads), rows_in,
                rows_out, manifest["seconds"], out / "predictions", run_id)
    return manifest


def previous_predictions(cfg: ApplyHeadsConfig, heads_fp: str, spec_fp: str) -> tuple[Path, dict] | None:
    """The published predictions run an incremental run builds on: same heads, same spec, and the embedding run it
    scored still on disk. Else None (score everything), with the reason logged."""
    current = publish.current_run(cfg.output.path)
    if cfg.mode != "incremental" or current is None or not (current / "manifest.json").is_file():
        return None
    m = read_manifest(current)
    why = ("the heads changed" if m.get("heads_fingerprint") != heads_fp else
           "the feature spec changed" if m.get("feature_spec_fingerprint") != spec_fp else
           "the embedding run it scored is gone" if not (Path(m.get("embeddings", "")) / "embeddings").is_dir()
           else None)
    if why:
        logger.info("incremental: scoring every row (%s)", why)
        return None
    return current, m


def rescore_changed(spark, emb, base: tuple[Path, dict], fn, schema: pa.Schema):
    """Score rows that are new or whose code changed since the base's embedding run; carry the base's predictions
    for the rest (with today's passthrough values). -> (predictions DataFrame, counts, the persisted join for the
    caller to release once the predictions are written)."""
    from pyspark.sql import functions as F

    folder, m = base
    publish.hold_run(folder)                # the base predictions and the embedding run they scored are read
    publish.hold_run(Path(m["embeddings"]))
    old_emb = spark.read.parquet((Path(m["embeddings"]) / "embeddings").as_uri()).select(
        F.col(ID), F.col(EMBEDDING).alias("_old"))
    old_pred = spark.read.parquet((folder / "predictions").as_uri())
    passthrough = [c for c in emb.columns if c not in (ID, EMBEDDING)]
    j = emb.join(old_emb, ID, "left").persist()
    todo = j.where(F.col("_old").isNull() | (F.col(EMBEDDING) != F.col("_old"))).select(*emb.columns)
    same = j.where(F.col(EMBEDDING) == F.col("_old")).select(ID, *passthrough)
    carried = same.join(old_pred.drop(*[c for c in passthrough if c in old_pred.columns]), ID).select(*schema.names)
    rescored = todo.count()
    out = todo.mapInArrow(fn, spark_schema(schema)).unionByName(carried)
    return out, {"parent_run": folder.name, "rescored": rescored, "carried": j.count() - rescored}, j


def layout(predictions, schema: pa.Schema, partitions: int):
    """One layout for full and incremental runs: hash partitions of the id (as many as the embedding table has
    files), sorted by id, typed exactly by ``schema`` (an Arrow pass-through restores the non-null columns a Parquet
    read loses), so the two give the same files and a rerun gives identical ones."""
    return id_layout(predictions, schema, partitions)


def _score(batches, heads_dir, spec, schema):
    from jobs.worker import score_partition

    return score_partition(batches, heads_dir, spec, schema)


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv, "apply_heads", "conf/apply_heads.yaml", ApplyHeadsConfig)


if __name__ == "__main__":
    sys.exit(main())
