"""Train many task heads on a published embedding table.

    python -m jobs.train_heads --config conf/train_heads.yaml [--set key=value ...]

Joins the embedding table with a label table on id (ids without an embedding or without labels are counted and
reported), stages the joined rows as Parquet, trains every configured task in one pass per epoch (``heads``), and
publishes ``output.path`` -> a run folder with one sub-folder per task (``weights.safetensors`` + ``head.json``),
``metrics.json``, ``report.md`` (with one ``confusion_<task>.png`` per multiclass head beside it) and
``manifest.json``.

Steps: open (embeddings, labels, task columns) -> stage (join, count, write) -> train -> save -> publish.
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from encoder.schema import EMBEDDING, ID
from encoder.spec import FeatureSpec
from encoder.typed_config import ConfigError
from heads.data import SPLIT, TEST, TRAIN, VALIDATION, SplitRule, arrow_source, petastorm_source
from heads.fitted import FittedHead
from heads.io import save_head
from heads.predict import task_columns
from heads.tasks import TaskConfig, check_tasks, resolve_columns
from heads.train import TrainConfig, train_heads
from jobs import publish
from jobs.charts import confusion_png
from jobs.common import SparkSettings, run_main, spark_session
from jobs.errors import InputError
from jobs.ingest import Format, read_table, require_columns
from jobs.tables import input_runs, open_embeddings, write_manifest

logger = logging.getLogger("jobs.train_heads")


@dataclass(frozen=True)
class LabelsConfig:
    path: str
    format: Format = "parquet"
    id_column: str = "id"
    # 'train' rows train, 'validation' rows choose the epoch and the multi-label thresholds, 'test' rows give the
    # reported figures (else validation does, labelled as such); other values are held out and counted. With no
    # validation rows (e.g. only train/test), or null (no split column), a deterministic hash of the id picks
    # train.val_percent % of the training rows for validation.
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
        check_tasks(self.tasks, source)
        clash = sorted({t.name for t in self.tasks if t.name == ID or any(
            t.name in task_columns(o.name, o.kind) for o in self.tasks if o is not t)})
        if clash:
            raise ConfigError(source, "tasks", f"names {clash} clash with the predictions table's columns (id, "
                              "<task>, <task>_score, <task>_scores, <task>_positive_score); rename them")
        if self.arrow_max_rows < 1:
            raise ConfigError(source, "arrow_max_rows", f"= {self.arrow_max_rows}; expected >= 1")


@publish.writes_output(lambda cfg: cfg.output.path)   # a read-only or full output is OutputError (exit 9)
def run(cfg: TrainHeadsConfig) -> dict:
    t0 = time.perf_counter()
    spark = spark_session(cfg.spark, "train_heads")
    emb = open_embeddings(spark, cfg.embeddings, (ID, EMBEDDING))   # pinned to the run published now, read whole
    spec = emb.spec
    labels, tasks = read_labels(spark, cfg)
    run_id, staging = publish.begin_run(cfg.output.path)
    counts = stage(emb.df, labels, staging / "train_data")
    reader = cfg.reader if cfg.reader != "auto" else ("arrow" if counts["used"] <= cfg.arrow_max_rows else "petastorm")
    hash_validation = cfg.labels.split_column is None or counts["validation"] == 0
    rule = SplitRule(SPLIT if cfg.labels.split_column else None, cfg.train.val_percent, hash_validation)
    label_cols = label_columns(tasks)
    source = (arrow_source if reader == "arrow" else petastorm_source)(staging / "train_data", spec, label_cols, rule)
    logger.info("training %d heads on %d rows (%s reader)", len(tasks), counts["used"], reader)
    heads = train_heads(source, tasks, spec.dim, cfg.train)
    shutil.rmtree(staging / "train_data")
    evaluation = {"split": heads[0].metrics["split"], "test_rows": counts["test"],
                  "validation": "hash of id" if hash_validation else "split column"}
    save(staging, heads, spec, counts, reader, evaluation)
    manifest = write_manifest(staging, run_id, t0, {
        "embeddings": str(emb.table.root), "input_runs": input_runs(embeddings=emb.table), "labels": cfg.labels.path,
        "rows": {k: v for k, v in counts.items() if k != "test"}, "evaluation": evaluation,
        "tasks": [h.task.name for h in heads], "feature_spec_fingerprint": spec.fingerprint, "reader": reader})
    out = publish.publish(cfg.output.path, staging, cfg.output.keep_runs)
    logger.info("train_heads: tasks=%d rows_used=%d validation=%d embedding_only=%d labels_only=%d held_out=%d "
                "evaluated_on=%s seconds=%.1f output=%s report=%s", len(heads), counts["used"], counts["validation"],
                counts["embedding_only"], counts["labels_only"], counts["held_out_split"], evaluation["split"],
                manifest["seconds"], out, out / "report.md")
    return manifest


def label_columns(tasks: tuple[TaskConfig, ...]) -> list[str]:
    return sorted({c for t in tasks for c in t.columns})


# -- open -------------------------------------------------------------------------------------------------------
def read_labels(spark, cfg: TrainHeadsConfig):
    """The label table as (id string, label columns as long, _split string), and the tasks with their column globs
    expanded. Repeated or null ids, missing columns and non-integer label columns are errors."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    lc = cfg.labels
    df = read_table(spark, lc.path, lc.format, "labels.path")
    where = f"label table {lc.path!r}"
    tasks = tuple(resolve_columns(t, df.columns, where) for t in cfg.tasks)
    columns = label_columns(tasks)
    require_columns(df.columns, [lc.id_column, *([lc.split_column] if lc.split_column else [])], where,
                    "set labels.id_column / labels.split_column")
    for c in columns:
        t = df.schema[c].dataType
        if not isinstance(t, (T.IntegralType, T.BooleanType)):
            raise InputError(f"label column {c!r} has type {t.simpleString()}; expected integers (0..k-1, -1 = none)")
    cols = [F.col(lc.id_column).cast("string").alias(ID), *[F.col(c).cast("long").alias(c) for c in columns],
            (F.col(lc.split_column).cast("string") if lc.split_column else F.lit(None).cast("string")).alias("_split")]
    labels = df.select(*cols)
    dups = labels.groupBy(ID).count().where(f"count > 1 OR {ID} IS NULL").count()
    if dups:
        raise InputError(f"{where} has {dups} null or repeated ids; labels must be one row per id")
    return labels, tasks


# -- stage ------------------------------------------------------------------------------------------------------
def stage(emb, labels, path: Path) -> dict:
    """Join embeddings with labels, write the rows heads use (train, validation, test) to ``path``; return the
    row accounting."""
    from pyspark.sql import functions as F

    emb = emb.select(F.col(ID).cast("string").alias(ID), EMBEDDING).withColumn("_e", F.lit(True))
    joined = emb.join(labels.withColumn("_l", F.lit(True)), ID, "full_outer").persist()  # counted, then written
    try:
        split = F.col("_split")
        both = F.col("_e") & F.col("_l")
        use = both & (split.isNull() | split.isin(TRAIN, VALIDATION))
        test = both & (split == TEST)
        counts = joined.agg(
            F.sum(both.cast("long")).alias("matched"),
            F.sum((F.col("_e") & F.col("_l").isNull()).cast("long")).alias("embedding_only"),
            F.sum((F.col("_l") & F.col("_e").isNull()).cast("long")).alias("labels_only"),
            F.sum(use.cast("long")).alias("used"),
            F.sum((use & (split == VALIDATION)).cast("long")).alias("validation"),
            F.sum(test.cast("long")).alias("test")).first().asDict()
        counts = {k: int(v or 0) for k, v in counts.items()}
        counts["held_out_split"] = counts["matched"] - counts["used"]
        if counts["used"] == 0:
            raise InputError("no id has both an embedding and labels in the train/validation splits; check "
                             "labels.id_column and labels.split_column")
        files = max(1, (counts["used"] + counts["test"]) // 500_000)
        label_cols = [c for c in labels.columns if c not in (ID, "_split")]
        (joined.where(use | test).select(ID, EMBEDDING, *label_cols, F.col("_split").alias(SPLIT))
         .repartitionByRange(files, ID).sortWithinPartitions(ID)
         .write.option("compression", "zstd").parquet(path.as_uri()))
    finally:
        joined.unpersist()
    return {k: counts[k] for k in ("matched", "embedding_only", "labels_only", "used", "validation",
                                   "held_out_split", "test")}


# -- save -------------------------------------------------------------------------------------------------------
def save(staging: Path, heads: list[FittedHead], spec: FeatureSpec, counts: dict, reader: str,
         evaluation: dict) -> None:
    for h in heads:
        save_head(staging / h.task.name, h, spec)
    spec.save(staging)
    metrics = {h.task.name: h.metrics for h in heads}
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (staging / "report.md").write_text(report_markdown(heads, counts, spec, reader, evaluation), encoding="utf-8")
    write_confusion_charts(staging, heads)


def confusion_chart(task: str) -> str:
    """File name of a multiclass head's confusion matrix, beside report.md (the report links it by this name)."""
    return f"confusion_{task}.png"


def write_confusion_charts(folder: Path, heads: list[FittedHead]) -> list[Path]:
    """One confusion-matrix PNG per multiclass head, from the counts its metrics kept (``metrics['confusion']``,
    the evaluated rows: test when present, else validation), so a reader sees which classes are mixed up."""
    out = []
    for h in heads:
        if "confusion" in h.metrics:
            m = h.metrics
            title = f"{h.task.name}: true vs predicted label, {m['split']} split ({m['rows']:,} rows)"
            out.append(confusion_png(folder / confusion_chart(h.task.name), m["confusion"], h.labels, title))
    return out


def report_markdown(heads: list[FittedHead], counts: dict, spec: FeatureSpec, reader: str, evaluation: dict) -> str:
    fmt = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    split = evaluation["split"]
    if split == TEST:
        where = (f"Figures are on the **test** split ({counts['test']:,} rows), which no step tuned on; validation "
                 "chose the epochs and the multi-label thresholds.")
    else:
        where = ("Figures are **validation** figures: the label table has no test split, and these rows also chose "
                 "the epochs and the multi-label thresholds, so they are optimistic. Add `split = test` rows for "
                 "unbiased figures.")
    if evaluation["validation"] == "hash of id":
        where += (" Validation rows were chosen by a deterministic hash of the id (the label table has no "
                  "`validation` rows).")
    lines = ["# Head training report", "",
             f"Feature spec `{spec.fingerprint[:16]}` ({spec.model['name']}, {spec.quantization}, {spec.dim} dims). "
             f"Reader: {reader}.", "", where, "",
             "| rows | count |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v:,} |" for k, v in counts.items()]
    lines += ["", f"| task | kind | head | train rows | {split} rows | accuracy | macro-F1 | majority macro-F1 |",
              "|---|---|---|---|---|---|---|---|"]
    for h in heads:
        m = h.metrics
        lines.append(f"| {h.task.name} | {h.task.kind} | {h.task.head} | {m['train_rows']:,} | {m['rows']:,} | "
                     f"{fmt(m.get('accuracy'))} | {fmt(m['macro_f1'])} | {fmt(m.get('majority_macro_f1'))} |")
    for h in heads:
        if h.task.kind == "multilabel":
            m = h.metrics
            tuned = h.thresholds is not None
            unscored = [k for k, v in m["per_label_f1"].items() if v is None]
            lines += ["", f"## {h.task.name}: per-label F1", "",
                      f"micro-F1 {fmt(m['micro_f1'])}, macro-F1 {fmt(m['macro_f1'])} over the "
                      f"{m['scored_labels']} of {m['labels']} labels with a positive in the {split} rows" +
                      (f"; with per-label thresholds tuned on validation (at 0.5: micro-F1 "
                       f"{fmt(m['micro_f1_at_0.5'])}, macro-F1 {fmt(m['macro_f1_at_0.5'])})" if tuned else "") + ".",
                      "", "| label | F1 | threshold |", "|---|---|---|"]
            lines += [f"| {k} | {fmt(v)} | {h.thresholds[j] if tuned else 0.5} |"
                      for j, (k, v) in enumerate(m["per_label_f1"].items()) if v is not None]
            if unscored:
                lines += ["", f"Not scored (no positive in the {split} rows): {', '.join(unscored)}."]
    for h in heads:
        if "confusion" in h.metrics:
            lines += ["", f"## {h.task.name}: confusion matrix", "",
                      f"Rows are the true labels, columns the predicted ones, over the {h.metrics['rows']:,} "
                      f"labelled {split} rows.", "",
                      f"![{h.task.name}: confusion matrix on the {split} split]({confusion_chart(h.task.name)})"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv, "train_heads", "conf/train_heads.yaml", TrainHeadsConfig)


if __name__ == "__main__":
    sys.exit(main())
