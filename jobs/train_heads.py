"""Train many task heads on a published embedding table.

    python -m jobs.train_heads --config conf/train_heads.yaml [--set key=value ...]

Joins the embedding table with a label table on id (ids without an embedding or without labels are counted and
reported), stages the joined rows as Parquet, trains every configured task in one pass per epoch (``heads``), and
publishes ``output.path`` -> a run folder with one sub-folder per task (``weights.safetensors`` + ``head.json``),
``metrics.json``, ``report.md`` and ``manifest.json``.
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from encoder.config import ConfigError
from encoder.spec import FeatureSpec
from encoder.table import spec_from_parquet
from heads.data import VALIDATION, arrow_source, petastorm_source
from heads.io import save_head
from heads.tasks import TaskConfig
from heads.train import TrainConfig, TrainedHead, train_heads
from jobs import publish
from jobs.common import SparkSettings, run_main, spark_session, versions
from jobs.ingest import InputError, to_uri

logger = logging.getLogger("jobs.train_heads")
TRAIN = "train"


@dataclass(frozen=True)
class LabelsConfig:
    path: str
    format: Literal["parquet", "jsonl", "csv", "tsv"] = "parquet"
    id_column: str = "id"
    # 'train' rows train, 'validation' rows choose the epoch and give the metrics, other values (e.g. 'test') are
    # held out and counted. null: no split column; a deterministic hash of the id picks train.val_percent rows.
    split_column: str | None = "split"


@dataclass(frozen=True)
class TrainHeadsConfig:
    embeddings: str                          # the embed job's published folder (embeddings/ + feature_spec.json)
    labels: LabelsConfig
    tasks: tuple[TaskConfig, ...]
    train: TrainConfig = field(default_factory=TrainConfig)
    reader: Literal["auto", "arrow", "petastorm"] = "auto"
    arrow_max_rows: int = 2_000_000          # auto: pyarrow in memory up to this many rows, petastorm streaming above
    output: publish.PublishConfig = field(default_factory=lambda: publish.PublishConfig(path="out/heads"))
    spark: SparkSettings = field(default_factory=SparkSettings)

    def validate(self, source: str, prefix: str) -> None:
        if not self.tasks:
            raise ConfigError(source, "tasks", "is empty; configure at least one task")
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(source, "tasks", f"names {dup} more than once; task names must be unique")


def load_table_spec(folder: str | Path) -> FeatureSpec:
    """The spec of a published embedding folder, checked against the spec stored in its Parquet files."""
    root = Path(folder)
    if not (root / "embeddings").is_dir():
        raise InputError(f"embeddings = {str(folder)!r} is not a published embed output (no embeddings/ folder)")
    spec = FeatureSpec.load(root)
    files = sorted((root / "embeddings").glob("*.parquet"))
    if files and spec_from_parquet(files[0])["fingerprint"] != spec.fingerprint:
        raise InputError(f"{root}: feature_spec.json does not match the spec stored in {files[0].name}")
    return spec


def _read_labels(spark, cfg: LabelsConfig, columns: list[str]):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if "://" not in cfg.path and not Path(cfg.path).exists():
        raise InputError(f"labels.path = {cfg.path!r} does not exist")
    reader = spark.read
    if cfg.format == "parquet":
        df = reader.parquet(to_uri(cfg.path))
    elif cfg.format == "jsonl":
        df = reader.json(to_uri(cfg.path))
    else:
        df = reader.options(header="true", inferSchema="true", sep="\t" if cfg.format == "tsv" else ",") \
            .csv(to_uri(cfg.path))
    wanted = [cfg.id_column, *columns, *([cfg.split_column] if cfg.split_column else [])]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise InputError(f"label table {cfg.path!r} has no column(s) {missing}; it has {sorted(df.columns)}")
    for c in columns:
        t = df.schema[c].dataType
        if not isinstance(t, (T.IntegralType, T.BooleanType)):
            raise InputError(f"label column {c!r} has type {t.simpleString()}; expected integers (0..k-1, -1 = none)")
    cols = [F.col(cfg.id_column).cast("string").alias("id"), *[F.col(c).cast("long").alias(c) for c in columns]]
    cols.append((F.col(cfg.split_column).cast("string") if cfg.split_column else F.lit(None).cast("string"))
                .alias("_split"))
    return df.select(*cols)


def prepare(spark, cfg: TrainHeadsConfig, staging: Path) -> dict:
    """Join embeddings with labels, write the usable rows to ``staging/train_data``; return the row accounting."""
    from pyspark.sql import functions as F

    label_cols = sorted({c for t in cfg.tasks for c in t.columns})
    emb = spark.read.parquet((Path(cfg.embeddings) / "embeddings").absolute().as_uri()) \
        .select(F.col("id").cast("string").alias("id"), "embedding").withColumn("_e", F.lit(True))
    lab = _read_labels(spark, cfg.labels, label_cols).withColumn("_l", F.lit(True))
    dups = lab.groupBy("id").count().where("count > 1 OR id IS NULL").count()
    if dups:
        raise InputError(f"label table {cfg.labels.path!r} has {dups} null or repeated ids; labels must be one row "
                         "per id")
    joined = emb.join(lab, "id", "full_outer").persist()  # counted, then written: join once
    try:
        return _write_joined(joined, cfg, staging, label_cols)
    finally:
        joined.unpersist()


def _write_joined(joined, cfg: TrainHeadsConfig, staging: Path, label_cols: list[str]) -> dict:
    from pyspark.sql import functions as F

    split = F.col("_split")
    use = F.col("_e") & F.col("_l") & (split.isNull() | split.isin(TRAIN, VALIDATION))
    counts = joined.agg(
        F.sum((F.col("_e") & F.col("_l")).cast("long")).alias("matched"),
        F.sum((F.col("_e") & F.col("_l").isNull()).cast("long")).alias("embedding_only"),
        F.sum((F.col("_l") & F.col("_e").isNull()).cast("long")).alias("labels_only"),
        F.sum(use.cast("long")).alias("used"),
        F.sum((use & (split == VALIDATION)).cast("long")).alias("validation")).first().asDict()
    counts = {k: int(v or 0) for k, v in counts.items()}
    counts["held_out_split"] = counts["matched"] - counts["used"]
    if counts["used"] == 0:
        raise InputError("no id has both an embedding and labels in the train/validation splits; check "
                         "labels.id_column and labels.split_column")
    files = max(1, counts["used"] // 500_000)
    (joined.where(use).select("id", "embedding", *label_cols, F.col("_split").alias("split"))
     .repartitionByRange(files, "id").sortWithinPartitions("id")
     .write.option("compression", "zstd").parquet((staging / "train_data").as_uri()))
    return counts


def report_markdown(heads: list[TrainedHead], counts: dict, spec: FeatureSpec, reader: str) -> str:
    lines = ["# Head training report", "",
             f"Feature spec `{spec.fingerprint[:16]}` ({spec.model['name']}, {spec.quantization}, {spec.dim} dims). "
             f"Reader: {reader}.", "",
             "| rows | count |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v:,} |" for k, v in counts.items()]
    lines += ["", "| task | kind | head | train rows | validation rows | accuracy | macro-F1 | majority macro-F1 |",
              "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for h in heads:
        m = h.metrics
        lines.append(f"| {h.task.name} | {h.task.kind} | {h.task.head} | {m['train_rows']:,} | {m['rows']:,} | "
                     f"{fmt(m.get('accuracy'))} | {fmt(m['macro_f1'])} | {fmt(m.get('majority_macro_f1'))} |")
    for h in heads:
        if h.task.kind == "multilabel":
            m = h.metrics
            tuned = h.thresholds is not None
            lines += ["", f"## {h.task.name}: per-label F1", "",
                      f"micro-F1 {fmt(m['micro_f1'])}, macro-F1 {fmt(m['macro_f1'])}" +
                      (f" with per-label thresholds tuned on validation (at 0.5: micro-F1 "
                       f"{fmt(m['micro_f1_at_0.5'])}, macro-F1 {fmt(m['macro_f1_at_0.5'])})" if tuned else ""), "",
                      "| label | F1 | threshold |", "|---|---|---|"]
            lines += [f"| {k} | {fmt(v)} | {h.thresholds[j] if tuned else 0.5} |"
                      for j, (k, v) in enumerate(m["per_label_f1"].items())]
    return "\n".join(lines) + "\n"


def run(cfg: TrainHeadsConfig) -> dict:
    t0 = time.perf_counter()
    spec = load_table_spec(cfg.embeddings)
    spark = spark_session(cfg.spark, "train_heads")
    run_id, staging = publish.begin_run(cfg.output.path)
    counts = prepare(spark, cfg, staging)
    reader = cfg.reader if cfg.reader != "auto" else ("arrow" if counts["used"] <= cfg.arrow_max_rows else "petastorm")
    label_cols = sorted({c for t in cfg.tasks for c in t.columns})
    split_col = "split" if cfg.labels.split_column else None
    make = arrow_source if reader == "arrow" else petastorm_source
    source = make(staging / "train_data", spec, label_cols, split_col, cfg.train.val_percent)
    logger.info("training %d heads on %d rows (%s reader)", len(cfg.tasks), counts["used"], reader)
    heads = train_heads(source, cfg.tasks, spec.dim, cfg.train)
    shutil.rmtree(staging / "train_data")
    for h in heads:
        save_head(staging / h.task.name, h, spec)
    spec.save(staging)
    metrics = {h.task.name: h.metrics for h in heads}
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (staging / "report.md").write_text(report_markdown(heads, counts, spec, reader), encoding="utf-8")
    manifest = {"run_id": run_id, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "embeddings": str(Path(cfg.embeddings).resolve()), "labels": cfg.labels.path, "rows": counts,
                "tasks": [h.task.name for h in heads], "feature_spec_fingerprint": spec.fingerprint,
                "reader": reader, "seconds": round(time.perf_counter() - t0, 2), "versions": versions()}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    out = publish.publish(cfg.output.path, staging, cfg.output.keep_runs)
    logger.info("train_heads: tasks=%d rows_used=%d validation=%d embedding_only=%d labels_only=%d held_out=%d "
                "seconds=%.1f output=%s report=%s", len(heads), counts["used"], counts["validation"],
                counts["embedding_only"], counts["labels_only"], counts["held_out_split"], manifest["seconds"], out,
                out / "report.md")
    return manifest


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv, "train_heads", "conf/train_heads.yaml", TrainHeadsConfig)


if __name__ == "__main__":
    sys.exit(main())
