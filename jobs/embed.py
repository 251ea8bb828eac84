"""Embed a text corpus once: Spark shards it over workers that run the shared encoder and write compact codes.

    python -m jobs.embed --config conf/embed.yaml [--set key=value ...]
    spark-submit jobs/embed.py --config conf/embed.yaml

Publishes ``output.path`` (a symlink to this run's folder) holding ``embeddings/`` (Parquet), ``quarantine/``
(Parquet, one row per held-back input row with its reason), ``feature_spec.json`` (+ ``.safetensors``) and
``manifest.json``. Nothing is published unless rows in = rows written + rows quarantined.

Steps: check (config against the model and the input, before Spark starts) -> read -> plan (the feature spec) ->
encode (a DataFrame -> DataFrame function) -> write -> validate -> publish.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # spark-submit jobs/embed.py: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa

from encoder.build_spec import build_spec, check_code, needs_calibration
from encoder.cache import cached
from encoder.encode import FeatureExtractor
from encoder.encoder_config import EncoderConfig
from encoder.model import load_encoder
from encoder.quantize import RescoreMode
from encoder.schema import (EMBEDDING, EMBEDDING_INT8, ID, N_TOKENS, REASON, SOURCE, SPEC_METADATA_KEY, TABLE_FORMAT_VERSION,
                            TEXT, TEXT_SHA256, TRUNCATED, embedding_schema, quarantine_schema)
from encoder.spec import FeatureSpec
from encoder.table import MANIFEST, PublishedRun, TableError, open_table, read_manifest
from encoder.typed_config import ConfigError
from jobs import publish
from jobs.common import SparkSettings, run_main, spark_session
from jobs.errors import InputError, QuarantineLimitError
from jobs.ingest import C_ID, C_REASON, C_SOURCE, C_TEXT, InputConfig, check_input, read_input
from jobs.tables import arrow_type, check_table, id_hash_column, id_layout, input_runs, parquet_rows, spark_schema, \
    write_manifest, write_table
from jobs.worker import TaskRecords, worker_summary

logger = logging.getLogger("jobs.embed")


@dataclass(frozen=True)
class OutputConfig(publish.PublishConfig):
    path: str = "out/embed"                  # git-ignored by default
    max_quarantine_fraction: float = 0.01    # above this share of bad rows the run fails and is not published
    # A nightly feed that arrives empty or truncated must not replace a good table: below this share of the rows the
    # previous published run read, the run fails before encoding (and an empty input always fails) unless force.
    min_rows_share: float = 0.5
    force: bool = False
    # full: encode every row. incremental (the nightly default in conf/embed.yaml): the published table is the base;
    # only rows whose id is new or whose text changed (sha256) are encoded, the rest are carried over byte for byte.
    # The base must have this run's feature spec (a new model or spec means a full run). No base: a full run.
    mode: Literal["full", "incremental"] = "full"
    deletions: Literal["drop", "keep"] = "drop"   # incremental: base ids missing from today's input (drop mirrors it)
    # none: the table holds the binary code only (48 B a row). int8: also the column embedding_int8, the same feature
    # as dim signed bytes (per-dimension scales calibrated on the input's sample, in the spec), for search to re-rank
    # binary candidates by cosine. Part of the feature spec: an incremental run must ask for the base's setting.
    rescore: RescoreMode = "none"

    def validate(self, source: str, prefix: str) -> None:
        super().validate(source, prefix)
        if not 0.0 <= self.min_rows_share <= 1.0:
            raise ConfigError(source, f"{prefix}min_rows_share", f"= {self.min_rows_share}; expected 0..1")
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

    def validate(self, source: str, prefix: str) -> None:
        enc = self.encoder
        if (enc.thresholds_from is not None and enc.quantization == "binary" and enc.thresholds != "calibrated"
                and self.output.rescore == "none"):
            raise ConfigError(source, f"{prefix}encoder.thresholds_from", "is only used with thresholds: calibrated "
                              "(or output.rescore: int8, whose scales it reuses)")
        if self.output.rescore != "none" and self.encoder.quantization != "binary":
            raise ConfigError(source, f"{prefix}output.rescore", f"= {self.output.rescore!r} re-ranks binary codes, "
                              f"but encoder.quantization = {self.encoder.quantization!r}; use rescore: none (the "
                              "codes are already higher precision) or quantization: binary")


@publish.writes_output(lambda cfg: cfg.output.path)   # a read-only or full output is OutputError (exit 9)
def run(cfg: EmbedConfig) -> dict:
    """Run the job; returns the manifest. Raises (and publishes nothing) on any failure."""
    t0 = time.perf_counter()
    extractor, spec = check(cfg)                  # before Spark starts and before a run folder exists
    spark = spark_session(cfg.spark, "embed")
    from pyspark import StorageLevel

    # Marked once (the duplicate check is a shuffle) and reused by calibration, encoding, quarantine and counts.
    df = read_input(spark, cfg.input).persist(StorageLevel.MEMORY_AND_DISK)
    joined = None                                 # an incremental run's persisted join with its base
    try:
        run_id, staging = publish.begin_run(cfg.output.path)
        logger.info("run %s staging in %s", run_id, staging)
        # The published run, resolved once with the output's lock held (no run can publish or prune it meanwhile):
        # the row-share guard and an incremental run's base both read this one run.
        current = publish.current_run(cfg.output.path)
        check_row_count(df.count(), cfg.output, current)
        base = base_table(cfg, extractor, spec, current)
        spec = spec or (base.spec if base is not None else plan(cfg, extractor, df))
        spec.save(staging)
        parts = cfg.encode_partitions or spark.sparkContext.defaultParallelism
        schema = table_schema(df, cfg.input, rescore=spec.rescore != "none")
        if base is None:
            todo, carried, delta = valid_rows(df), None, None
        else:
            todo, carried, delta, joined = changes(spark, valid_rows(df), base, cfg, schema)
        with Progress(spark.sparkContext, delta["encoded"] if delta else valid_rows(df).count()) as progress:
            encoded = encode(todo, cfg, spec, schema, parts, progress.rows, progress.tasks)
            write(encoded if carried is None else merge(encoded, carried, spec, schema, parts), quarantined_rows(df),
                  staging, cfg)
        facts = validate(spark, df, staging, spec, schema, cfg, kept=delta["kept"] if delta else 0)
        facts["workers"] = worker_summary(progress.tasks.value)
        if base is not None:
            facts["incremental"] = {"parent_run": base.root.name, **delta}
            facts["input_runs"] = input_runs(base=PublishedRun(Path(cfg.output.path).absolute(), base.root))
        manifest = write_manifest(staging, run_id, t0, {
            "table_format_version": TABLE_FORMAT_VERSION,
            "input": {"path": cfg.input.path, "format": cfg.input.format, "id_column": cfg.input.id_column,
                      "text_column": cfg.input.text_column, "passthrough": list(passthrough_columns(cfg.input)),
                      "keep_text": cfg.input.keep_text},
            **facts, "tables": {"embeddings": "embeddings", "quarantine": "quarantine"},
            "feature_spec": spec.to_json_dict() | {"fingerprint": spec.fingerprint}, "encode_partitions": parts})
        out = publish.publish(cfg.output.path, staging, cfg.output.keep_runs)
    finally:
        df.unpersist()
        if joined is not None:
            joined.unpersist()
    r = manifest["rows"]
    logger.info("embed: rows_in=%d written=%d quarantined=%d truncated=%d seconds=%.1f output=%s run=%s spec=%s",
                r["in"], r["written"], r["quarantined"], r["truncated"], manifest["seconds"], out, run_id,
                spec.fingerprint[:12])
    return manifest


# -- check ------------------------------------------------------------------------------------------------------
def check(cfg: EmbedConfig) -> tuple[FeatureExtractor, FeatureSpec | None]:
    """Everything that can fail without Spark: the model loads, the extractor fits it (layers, max_length), a reused
    spec fits both, the input has its columns. Returns the extractor and the spec when no calibration is needed."""
    extractor = FeatureExtractor(_driver_encoder(cfg.encoder.model), cfg.encoder)
    rescore = cfg.output.rescore
    spec = None if needs_calibration(cfg.encoder, rescore) else build_spec(cfg.encoder, extractor, rescore=rescore)
    check_input(cfg.input)
    return extractor, spec


def _driver_encoder(model: str):
    """The driver's copy of the encoder (fingerprint, calibration); kept for later runs in the same process."""
    return cached("driver_encoder", model, lambda: load_encoder(model, device="cpu", threads=0))


# -- incremental ------------------------------------------------------------------------------------------------
def base_table(cfg: EmbedConfig, extractor: FeatureExtractor, spec: FeatureSpec | None,
               current: Path | None):
    """The published table an incremental run builds on: ``current``, the run folder the output pointed to when
    this run took its lock (so neither a publish swap nor a prune can move it), or None for a full run. A base of
    another feature spec is an error naming both fingerprints."""
    from encoder.spec import SpecMismatchError

    if cfg.output.mode != "incremental" or current is None:
        return None
    base = open_table(current)
    publish.hold_run(base.root)            # carried rows are read from it: not pruned while this run reads it
    what, hint = f"the published table {current.name}", "a new model or spec needs output.mode=full"
    if spec is None:          # calibrated: the base's own thresholds, if this encoder and these code settings fit it
        extractor.check_spec(base.spec)
        check_code(base.spec, cfg.encoder, what, hint, cfg.output.rescore)
        return base
    if spec.fingerprint != base.spec.fingerprint:
        raise SpecMismatchError(f"output.mode = incremental builds on {what}, whose feature spec is "
                                f"{base.spec.fingerprint[:16]}…; this config gives {spec.fingerprint[:16]}… "
                                f"(differs in {', '.join(_named(d) for d in base.spec.differences(spec))}); {hint}")
    return base


def _named(setting: str) -> str:
    """A spec difference with the config key that sets it, when it is a code setting (``CODE_KEYS``)."""
    from encoder.spec import CODE_KEYS

    return f"{setting} ({CODE_KEYS[setting]})" if setting in CODE_KEYS else setting


def text_hash(col):
    """sha256 (hex) of a text's UTF-8 bytes, in Spark: the same value as the stored text_sha256 (Python hashlib)."""
    from pyspark.sql import functions as F

    return F.sha2(col, 256)


def changes(spark, valid, base, cfg: EmbedConfig, schema: pa.Schema):
    """Split today's valid rows against the base: -> (rows to encode, carried embedding-table rows, counts).

    New ids and changed texts are encoded; unchanged rows keep the base's code, hash, token count and truncation
    flag, with today's passthrough values; base ids missing today are dropped or kept (``output.deletions``)."""
    from pyspark.sql import functions as F

    old = spark.read.parquet(*[f.absolute().as_uri() for f in base.files])
    if old.columns != schema.names:
        raise ConfigError("embed", "output.mode", f"= incremental, but the published table's columns {old.columns} "
                          f"differ from this run's {schema.names} (passthrough or keep_text changed); run with "
                          "output.mode=full")
    today = valid.withColumn("_sha", text_hash(F.col(C_TEXT)))
    j = today.join(old.select(F.col(ID).alias("_bid"), F.col(TEXT_SHA256).alias("_bsha")),
                   today[C_ID] == F.col("_bid"), "left")
    kind = F.when(F.col("_bid").isNull(), "new").when(F.col("_sha") != F.col("_bsha"), "changed").otherwise("same")
    j = j.withColumn("_kind", kind).persist()
    counts = {r["_kind"]: r["n"] for r in j.groupBy("_kind").agg(F.count(F.lit(1)).alias("n")).collect()}
    todo = j.where(F.col("_kind") != "same").select(*valid.columns)
    extra = passthrough_columns(cfg.input)
    keep = (EMBEDDING, *([EMBEDDING_INT8] if EMBEDDING_INT8 in schema.names else []), TEXT_SHA256, N_TOKENS,
            TRUNCATED)
    same = (j.where(F.col("_kind") == "same").select(C_ID, *[F.col(c) for c in extra if c != TEXT],
                                                   *([F.col(C_TEXT).alias(TEXT)] if cfg.input.keep_text else []))
            .join(old.select(F.col(ID).alias(C_ID), *keep), C_ID))
    gone = old.join(today.select(F.col(C_ID).alias(ID)), ID, "left_anti")
    deleted = gone.count()
    carried = same.select(F.col(C_ID).alias(ID), *keep, *extra)
    kept = 0
    if cfg.output.deletions == "keep" and deleted:
        carried = carried.unionByName(gone.select(*schema.names))
        kept = deleted
    delta = {"new": counts.get("new", 0), "changed": counts.get("changed", 0), "unchanged": counts.get("same", 0),
             "deleted": deleted, "kept": kept, "encoded": counts.get("new", 0) + counts.get("changed", 0)}
    logger.info("incremental: %s", delta)
    return todo, carried.select(*schema.names), delta, j   # j: persisted; the caller unpersists it when written


def merge(encoded, carried, spec: FeatureSpec, schema: pa.Schema, partitions: int):
    """Encoded and carried rows as one table, laid out exactly as a full run lays it out (hash partitions of the id,
    sorted by id) and typed exactly as it types it (an Arrow pass-through restores the non-null columns and the
    spec on the embedding column that a Parquet read loses), so the files match a full run's."""
    return id_layout(encoded.unionByName(carried), schema, partitions,
                     {EMBEDDING: {SPEC_METADATA_KEY: _spec_meta(spec)}})


def _spec_meta(spec: FeatureSpec) -> str:
    return json.dumps(spec.to_json_dict() | {"fingerprint": spec.fingerprint,
                                            "table_format_version": TABLE_FORMAT_VERSION}, sort_keys=True)


def check_row_count(rows: int, out: OutputConfig, previous: Path | None) -> None:
    """Refuse an empty input, and one below ``min_rows_share`` of what ``previous`` (the published run, resolved
    once) read, unless ``output.force``: a truncated nightly feed must not replace a good table. A published run
    whose manifest is missing, not JSON or without ``rows.in`` is a ``TableError``: the guard cannot be skipped."""
    if out.force:
        return
    if rows == 0:
        raise InputError("the input has no rows; not replacing the published table (set output.force=true to "
                         "publish an empty table)")
    if previous is not None:
        hint = "the row-share guard cannot compare with it (output.force=true replaces it without the guard)"
        try:
            before = read_manifest(previous).get("rows", {})
        except TableError as exc:
            raise TableError(f"{exc}; {hint}") from None
        before = before.get("in") if isinstance(before, dict) else None
        if not isinstance(before, int) or isinstance(before, bool):
            raise TableError(f"{previous / MANIFEST}: rows.in = {before!r}, not a row count; {hint}")
        if before and rows < out.min_rows_share * before:
            raise InputError(f"the input has {rows:,} rows, below output.min_rows_share = {out.min_rows_share} of the "
                             f"{before:,} the published run {previous.name} read; not replacing it (set "
                             "output.force=true if the drop is real)")


# -- plan -------------------------------------------------------------------------------------------------------
def valid_rows(df):
    from pyspark.sql import functions as F

    return df.where(F.col(C_REASON).isNull())


def quarantined_rows(df):
    """Quarantine table rows (one per faulty input row), in a stable order."""
    from pyspark.sql import functions as F

    return (df.where(F.col(C_REASON).isNotNull())
            .select(F.col(C_ID).cast("string").alias(ID), F.col(C_TEXT).alias(TEXT), F.col(C_REASON).alias(REASON),
                    F.col(C_SOURCE).alias(SOURCE))
            .repartition(1).sortWithinPartitions(REASON, ID, SOURCE))


def plan(cfg: EmbedConfig, extractor: FeatureExtractor, df) -> FeatureSpec:
    """This run's spec when it needs calibration: on the valid rows with the smallest hash of their id
    (deterministic, bounded by calibration_rows)."""
    from pyspark.sql import functions as F

    def sample(n: int) -> list[str]:
        rows = valid_rows(df).orderBy(id_hash_column(F.col(C_ID)), C_ID).select(C_TEXT).limit(n)
        return [r[0] for r in rows.collect()]

    return build_spec(cfg.encoder, extractor, sample, cfg.output.rescore)


def table_schema(df, input_cfg: InputConfig, rescore: bool = False) -> pa.Schema:
    """The embedding table's pyarrow schema for this input (id type and passthrough columns as read, then the text
    when ``input.keep_text``), with the rescoring column when the spec has one."""
    types = {f.name: arrow_type(f.dataType) for f in df.schema.fields}
    passthrough = pa.schema([pa.field(name, types[name]) for name in input_cfg.passthrough] +
                            ([pa.field(TEXT, pa.string())] if input_cfg.keep_text else []))
    return embedding_schema(arrow_type(df.schema[C_ID].dataType), passthrough, rescore)


def passthrough_columns(input_cfg: InputConfig) -> tuple[str, ...]:
    """The embedding table's columns after the core ones, in table order."""
    return tuple(input_cfg.passthrough) + ((TEXT,) if input_cfg.keep_text else ())


# -- encode -----------------------------------------------------------------------------------------------------
def encode(valid, cfg: EmbedConfig, spec: FeatureSpec, schema: pa.Schema, partitions: int, rows_done=None,
           tasks=None):
    """Valid input rows (``_id``, ``_text``, passthrough) -> embedding-table rows, as a DataFrame. ``rows_done``: an
    accumulator of encoded rows; ``tasks``: one of task records (``jobs.worker.TaskRecords``).

    Rows are hash-partitioned and sorted by id so batches, and therefore bytes, repeat on a rerun. One task per
    core: measured faster than 4 per core on local[2] (bench/encode.py), since each task pays a start.
    """
    spec_meta = _spec_meta(spec)
    from pyspark.sql import functions as F

    fn = partial(_encode, cfg=cfg.encoder, spec=spec, passthrough=passthrough_columns(cfg.input), schema=schema,
                 rows_done=rows_done, tasks=tasks)
    kept = [F.col(C_TEXT).alias(TEXT)] if cfg.input.keep_text else []
    return (valid.select(C_ID, C_TEXT, *cfg.input.passthrough, *kept)
            .repartition(partitions, C_ID).sortWithinPartitions(C_ID)
            .mapInArrow(fn, spark_schema(schema, {EMBEDDING: {SPEC_METADATA_KEY: spec_meta}})))


def _encode(batches, cfg, spec, passthrough, schema, rows_done=None, tasks=None):
    from jobs.worker import encode_partition

    for out in encode_partition(batches, cfg, spec, C_ID, C_TEXT, passthrough, schema, tasks):
        if rows_done is not None:
            rows_done.add(out.num_rows)
        yield out


class Progress:
    """Logs encoding progress from the driver: rows done of total, rows/s and ETA, each time a partition finishes
    (Spark merges a task's accumulator updates when the task ends), polled every few seconds. ``tasks`` collects the
    encoding tasks' records (the manifest's ``workers``)."""

    def __init__(self, sc, total: int, every_s: float = 5.0):
        self.rows = sc.accumulator(0)
        self.tasks = sc.accumulator([], TaskRecords())
        self.total, self.every_s = total, every_s
        self._stop = None

    def __enter__(self) -> "Progress":
        import threading

        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        threading.Thread(target=self._loop, daemon=True, name="embed-progress").start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()   # type: ignore[union-attr]
        self._report(final=True)

    def _loop(self) -> None:
        last = 0
        while not self._stop.wait(self.every_s):   # type: ignore[union-attr]
            done = self.rows.value
            if done != last:
                self._report()
                last = done

    def _report(self, final: bool = False) -> None:
        done, total = self.rows.value, max(self.total, 1)
        secs = time.perf_counter() - self._t0
        rate = done / secs if secs > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        logger.info("encoded %d of %d rows (%.0f%%), %.1f rows/s%s", done, self.total, 100 * done / total, rate,
                    "" if final else f", ETA {eta:.0f} s")


# -- write, validate --------------------------------------------------------------------------------------------
def write(encoded, quarantine, staging: Path, cfg: EmbedConfig) -> None:
    write_table(encoded, staging / "embeddings", cfg.output.compression)
    write_table(quarantine, staging / "quarantine", cfg.output.compression)


def validate(spark, df, staging: Path, spec: FeatureSpec, schema: pa.Schema, cfg: EmbedConfig, kept: int = 0) -> dict:
    """The written tables before publishing: schemas, code widths, rows in = written + quarantined (+ rows an
    incremental run kept for ids missing today), the quarantine limit. Returns the manifest's row facts."""
    from pyspark.sql import functions as F

    rows_in = df.count()
    written, quarantined = parquet_rows(staging / "embeddings"), parquet_rows(staging / "quarantine")
    check_table(staging / "embeddings", schema)
    check_table(staging / "quarantine", quarantine_schema())
    emb = spark.read.parquet((staging / "embeddings").as_uri())
    widths = {EMBEDDING: spec.n_bytes} | ({EMBEDDING_INT8: spec.rescore_bytes} if spec.rescore_bytes else {})
    stats = emb.agg(F.sum(F.col(TRUNCATED).cast("int")).alias("t"),
                    *[F.sum((F.length(c) != n).cast("int")).alias(f"bad_{c}") for c, n in widths.items()]).first()
    truncated = int(stats["t"] or 0)
    for c, n in widths.items():
        if stats[f"bad_{c}"]:
            raise RuntimeError(f"{int(stats[f'bad_{c}'])} rows of {c} are not {n} bytes long; not publishing")
    if rows_in + kept != written + quarantined:
        raise RuntimeError(f"rows in ({rows_in}) + kept ({kept}) != written ({written}) + quarantined ({quarantined});"
                           f" not publishing {staging}")
    reasons = {r[REASON]: r["n"] for r in spark.read.parquet((staging / "quarantine").as_uri())
               .groupBy(REASON).agg(F.count(F.lit(1)).alias("n")).collect()}
    fraction = quarantined / rows_in if rows_in else 0.0
    if fraction > cfg.output.max_quarantine_fraction:
        raise QuarantineLimitError(f"{quarantined} of {rows_in} rows ({fraction:.2%}) were quarantined, above "
                                   f"output.max_quarantine_fraction = {cfg.output.max_quarantine_fraction}; "
                                   f"reasons {reasons}; see {staging / 'quarantine'}; not published")
    return {"rows": {"in": rows_in, "written": written, "quarantined": quarantined, "truncated": truncated},
            "quarantine_reasons": dict(sorted(reasons.items()))}


def dry_run(cfg: EmbedConfig) -> dict:
    """``--dry-run``: the config, the model and the input checked (columns and types, rows, faulty rows by reason,
    the quarantine limit) without encoding or writing anything."""
    from pyspark.sql import functions as F

    extractor, spec = check(cfg)
    spark = spark_session(cfg.spark, "embed")
    df = read_input(spark, cfg.input)
    counts = {r[C_REASON] or "valid": r["n"] for r in df.groupBy(C_REASON).agg(F.count(F.lit(1)).alias("n")).collect()}
    rows = sum(counts.values())
    bad = rows - counts.get("valid", 0)
    return {"config": "ok", "model": extractor.loaded.fingerprint, "input": cfg.input.path, "rows": rows,
            "valid": counts.get("valid", 0), "quarantine": {k: v for k, v in sorted(counts.items()) if k != "valid"},
            "quarantine_limit_ok": (bad / rows if rows else 0.0) <= cfg.output.max_quarantine_fraction,
            "feature_spec": spec.fingerprint if spec is not None else "calibrated at run time",
            "output": cfg.output.path}


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv, "embed", "conf/embed.yaml", EmbedConfig, dry_run=dry_run)


if __name__ == "__main__":
    sys.exit(main())
