"""Fine-tune the shared encoder on several labelled tables at once and publish it as a model folder.

    python -m jobs.train_encoder --config conf/train_encoder.yaml [--set key=value ...]    # make train_encoder

Each task reads its own table through the project's input reader (faulty rows are counted by reason and left out,
as the embed job quarantines them), keeps the rows labelled for it, splits them (a split column, the file names of a
folder of train/validation/test files, or a hash of the id) and caps its training rows by a hash of the id. Training
(``tuning/``) runs in the driver, or data-parallel through Spark's TorchDistributor
(``distributed.processes``). The run folder published at ``output.path`` is a model folder the embed job reads with
``--set encoder.model=<output.path>``: ``model.safetensors``, ``config.json``, tokenizer files, ``lineage.json`` (base
model, tasks with their data fingerprints and row counts, settings, seed, validation history) and
``manifest.json``. The model's fingerprint covers ``lineage.json``, so its tables get a feature spec of their own.

Steps: read (per task: input, faults, labels, splits, caps) -> train -> save -> publish.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from encoder.encoder_config import EncoderConfig
from encoder.hashing import ID_BUCKETS, file_sha256
from encoder.model import LINEAGE, model_fingerprint, resolve_model_path
from encoder.typed_config import ConfigError, to_data
from heads.tasks import MISSING, LabelError, TaskConfig, check_label_values, check_tasks, class_count, first_ids, \
    resolve_columns
from jobs import publish
from jobs.common import SparkSettings, run_main, spark_session
from jobs.errors import InputError
from jobs.ingest import C_ID, C_REASON, C_TEXT, Format, InputConfig, data_suffixes, read_input, read_table
from jobs.tables import id_hash_column, versions, write_manifest
from tuning.config import MultiTaskConfig
from tuning.data import TaskData
from tuning.run import TuningJob, train_and_save

logger = logging.getLogger("jobs.train_encoder")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TaskTable:
    """Where one task's labelled texts are."""

    path: str                              # a file, or with split: file a folder of train/validation/test files
    format: Format = "parquet"
    id_column: str = "id"
    text_column: str = "text"
    # A column holding train/validation/test; 'file': the folder's files are named by split (train.parquet, ...);
    # null: a hash of the id puts val_percent % of the rows in validation. Test rows are counted, never trained on.
    split: str | None = "split"
    max_train_rows: int = 0                # 0 = all; else the first n training rows by sha256 of the id

    def validate(self, source: str, prefix: str) -> None:
        if self.max_train_rows < 0:
            raise ConfigError(source, f"{prefix}max_train_rows", f"= {self.max_train_rows}; expected >= 0")


@dataclass(frozen=True)
class TuningTask(TaskConfig):
    """A task (as for heads: name, kind, columns, labels, head) and the table it is read from."""

    table: TaskTable | None = None

    def validate(self, source: str, prefix: str) -> None:
        super().validate(source, prefix)
        if self.table is None:
            raise ConfigError(source, f"{prefix}table", "is missing; give the task's table (path, format, columns)")


@dataclass(frozen=True)
class DistributedConfig:
    processes: int = 0                     # 0: train in the driver; n >= 2: TorchDistributor with n processes
    local_mode: bool = True                # processes on the driver's machine (else as Spark barrier tasks)

    def validate(self, source: str, prefix: str) -> None:
        if self.processes < 0 or self.processes == 1:
            raise ConfigError(source, f"{prefix}processes", f"= {self.processes}; expected 0 (in the driver) or >= 2")


@dataclass(frozen=True)
class TrainEncoderConfig:
    tasks: tuple[TuningTask, ...]
    # The base model and the features the encoder is trained for (layers, layer_combine, pooling, normalize, and
    # the binary thresholds its bits are trained against); embed with the same settings.
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    training: MultiTaskConfig = field(default_factory=MultiTaskConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    val_percent: int = 10                  # hash split for tasks without validation rows
    output: publish.PublishConfig = field(default_factory=lambda: publish.PublishConfig(path="out/encoder"))
    spark: SparkSettings = field(default_factory=SparkSettings)

    def validate(self, source: str, prefix: str) -> None:
        check_tasks(self.tasks, source)
        if self.encoder.features.backend != "torch":
            raise ConfigError(source, "encoder.backend", f"= {self.encoder.features.backend!r}: tuning trains the "
                              "torch model; embed with that backend afterwards (expected 'torch' here)")
        if not 0 < self.val_percent < 100:
            raise ConfigError(source, "val_percent", f"= {self.val_percent}; expected 1..99")
        if self.encoder.quantization == "binary" and self.encoder.thresholds == "calibrated" \
                and self.training.binary != "off":
            raise ConfigError(source, "training.binary", f"= {self.training.binary!r} trains the bits against zero "
                              "thresholds; use encoder.thresholds: zero, or training.binary: off")


@publish.writes_output(lambda cfg: cfg.output.path)   # a read-only or full output is OutputError (exit 9)
def run(cfg: TrainEncoderConfig) -> dict:
    t0 = time.perf_counter()
    base_path = resolve_model_path(cfg.encoder.model)
    base_fp = model_fingerprint(base_path)
    spark = spark_session(cfg.spark, "train_encoder")
    tasks, accounts = [], []
    for t in cfg.tasks:
        data, account = read_task(spark, t, cfg.val_percent)
        tasks.append(data)
        accounts.append(account)
        logger.info("task %s: %s", t.name, account["rows"])
    run_id, staging = publish.begin_run(cfg.output.path)
    device = cfg.encoder.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    features = to_data(cfg.encoder.features)
    lineage = {"name": f"{base_fp['name']}-tuned-{run_id}", "run_id": run_id, "base_model": base_fp,
               "features": features | {"quantization": cfg.encoder.quantization, "thresholds": cfg.encoder.thresholds},
               "training": dataclasses.asdict(cfg.training), "seed": cfg.training.seed,
               "distributed": dataclasses.asdict(cfg.distributed), "tasks": accounts, "versions": versions()}
    job = TuningJob(base_model=str(base_path), features=cfg.encoder.features, tasks=tuple(tasks),
                    training=cfg.training, out=str(staging), lineage=lineage, device=device,
                    threads=os.cpu_count() or 1)
    if cfg.distributed.processes:
        from pyspark.ml.torch.distributor import TorchDistributor

        logger.info("training with TorchDistributor: %d processes (%s)", cfg.distributed.processes,
                    "local mode" if cfg.distributed.local_mode else "on executors")
        # every process returns; which return value the distributor keeps is not defined, so the summary is read
        # from what rank 0 wrote (the driver must see output.path: shared storage when local_mode is false)
        TorchDistributor(num_processes=cfg.distributed.processes, local_mode=cfg.distributed.local_mode,
                         use_gpu=device == "cuda").run(train_and_save, job)
    else:
        train_and_save(job)
    if not (staging / "model.safetensors").is_file() or not (staging / LINEAGE).is_file():
        raise RuntimeError(f"training ended without writing the model folder {staging} (with distributed.local_mode "
                           "false, output.path must be storage the executors and the driver share)")
    summary = json.loads((staging / LINEAGE).read_text(encoding="utf-8"))["training_run"]
    summary["fingerprint"] = model_fingerprint(staging)
    manifest = write_manifest(staging, run_id, t0, {
        "model": summary["fingerprint"], "base_model": base_fp,
        "rows": {a["name"]: a["rows"] for a in accounts},
        "best_step": summary["best_step"], "best_validation_mean": summary["best_validation_mean"],
        "steps": summary["steps"], "training_seconds": summary["seconds"], "processes": summary["processes"]})
    out = publish.publish(cfg.output.path, staging, cfg.output.keep_runs)
    logger.info("train_encoder: tasks=%d steps=%d best_step=%d validation_mean=%.4f seconds=%.1f output=%s "
                "model=%s (embed with --set encoder.model=%s)", len(tasks), summary["steps"], summary["best_step"],
                summary["best_validation_mean"], manifest["seconds"], out, summary["fingerprint"]["sha256"][:12],
                cfg.output.path)
    return manifest


# -- read -------------------------------------------------------------------------------------------------------
def read_task(spark, t: TuningTask, val_percent: int) -> tuple[TaskData, dict]:
    """One task's rows -> TaskData (train and validation texts with labels) and its accounting for lineage.json."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    tab: TaskTable = t.table  # type: ignore[assignment]
    key = f"tasks[{t.name}].table.path"
    files = _split_files(tab, key) if tab.split == "file" else {None: tab.path}
    first = read_table(spark, next(iter(files.values())), tab.format, key)
    task = resolve_columns(t, first.columns, f"table {tab.path!r}")
    label_cols = list(task.columns)
    for c in label_cols:
        if not isinstance(first.schema[c].dataType, (T.IntegralType, T.BooleanType)):
            raise InputError(f"{key}: label column {c!r} has type {first.schema[c].dataType.simpleString()}; "
                             "expected integers (0..k-1, -1 = none)")
    split_col = [tab.split] if tab.split not in (None, "file") else []
    frames = []
    for split, path in files.items():
        df = read_input(spark, InputConfig(path=path, format=tab.format, id_column=tab.id_column,
                                           text_column=tab.text_column, passthrough=tuple(label_cols + split_col)))
        frames.append(df.withColumn("_split", F.lit(split) if tab.split == "file"
                                    else F.col(tab.split).cast("string") if split_col else F.lit(None)))
    df = frames[0]
    for f in frames[1:]:
        df = df.unionByName(f)
    known = [F.coalesce(F.col(c).cast("long"), F.lit(MISSING)) for c in label_cols]
    labelled = (F.greatest(*known) if len(known) > 1 else known[0]) > MISSING
    df = df.withColumn("_labelled", labelled).withColumn("_h", id_hash_column(F.col(C_ID))).persist()
    try:
        faults = {r[C_REASON]: int(r["count"]) for r in df.where(F.col(C_REASON).isNotNull())
                  .groupBy(C_REASON).count().collect()}
        good = df.where(F.col(C_REASON).isNull())
        counts = {r["_split"]: int(r["count"]) for r in good.where("_labelled").groupBy("_split").count().collect()}
        rows_in = df.count()
        unlabelled = good.where(~F.col("_labelled")).count()
        has_val = counts.get("validation", 0) > 0
        split = F.col("_split")
        if not has_val:   # no validation rows: a hash of the id takes val_percent % of the training rows
            train_like = split.isNull() | (split == "train")
            split = F.when(train_like & (F.col("_h") % ID_BUCKETS < val_percent), "validation") \
                .when(train_like, "train").otherwise(split)
        use = good.where("_labelled").withColumn("_use", split)
        rows = {"in": rows_in, "faulty": sum(faults.values()), "faults": faults, "unlabelled": unlabelled,
                "test": counts.get("test", 0),
                "other_split": sum(v for k, v in counts.items() if k not in (*SPLITS, None)),
                "no_split": counts.get(None, 0) if has_val else 0}   # a null split with validation rows present
        if len(files) > 1:   # ids repeated across the split files (within a file the reader quarantines them)
            dups = good.groupBy(C_ID).count().where("count > 1").count()
            if dups:
                raise InputError(f"{key} = {tab.path!r}: {dups} ids appear in more than one split file")
        parts = {}
        for s in ("train", "validation"):
            q = use.where(F.col("_use") == s).orderBy("_h", C_ID)
            if s == "train" and tab.max_train_rows:
                q = q.limit(tab.max_train_rows)
            parts[s] = q.select(C_ID, C_TEXT, *[F.col(c).cast("long").alias(c) for c in label_cols]).toArrow()
        total_train = use.where(F.col("_use") == "train").count()
    finally:
        df.unpersist()
    rows |= {"train_available": total_train, "train": parts["train"].num_rows,
             "validation": parts["validation"].num_rows,
             "validation_from": "split" if has_val else f"hash of id ({val_percent}%)"}
    if rows["train"] == 0 or rows["validation"] == 0:
        raise LabelError(f"task {t.name!r}: {rows['train']} training and {rows['validation']} validation rows "
                         f"labelled for it in {tab.path!r}; it needs both (check split and columns)")
    y = {s: _labels(parts[s], label_cols, task) for s in parts}
    seen = first_ids(np.concatenate([y["train"], y["validation"]]) if task.kind != "multilabel" else np.zeros(0),
                     parts["train"].column(C_ID).to_pylist() + parts["validation"].column(C_ID).to_pylist())
    n_classes = class_count(task, seen)
    data = TaskData(task=TaskConfig(**{f.name: getattr(task, f.name) for f in dataclasses.fields(TaskConfig)}),
                    n_classes=n_classes,
                    train_texts=parts["train"].column(C_TEXT).to_pylist(), train_y=y["train"],
                    val_texts=parts["validation"].column(C_TEXT).to_pylist(), val_y=y["validation"])
    account = {"name": t.name, "kind": t.kind, "columns": label_cols, "n_classes": n_classes,
               "labels": list(task.labels), "data": {"path": tab.path, "format": tab.format,
                                                      "files": _fingerprint_files(tab.path)}, "rows": rows}
    return data, account


def _split_files(tab: TaskTable, key: str) -> dict[str, str]:
    folder = Path(tab.path)
    suffixes = data_suffixes(tab.format)         # the file names the input reader reads for this format
    ext = suffixes[0]
    if not folder.is_dir():
        raise InputError(f"{key} = {tab.path!r}: split: file needs a folder holding train{ext}, validation{ext}, "
                         f"test{ext}")
    found = {p.name[:-len(s)]: str(p) for p in sorted(folder.iterdir()) for s in suffixes
             if p.is_file() and p.name.endswith(s) and not p.name.startswith((".", "_"))}
    other = sorted(set(found) - set(SPLITS))
    if other or "train" not in found:
        raise InputError(f"{key} = {tab.path!r}: split: file reads train{ext} (required), validation{ext} and "
                         f"test{ext}; found {sorted(found)}")
    return {s: found[s] for s in SPLITS if s in found}


def _labels(t, cols: list[str], task: TaskConfig) -> np.ndarray:
    """Label columns -> int64[n] (or [n, L] for multilabel), each checked by the one label check."""
    ids = t.column(C_ID).to_pylist()
    arrays = [np.asarray(t.column(c).fill_null(MISSING).to_numpy(zero_copy_only=False), np.int64) for c in cols]
    for c, y in zip(cols, arrays):
        check_label_values(task, c, y, ids)
    return np.stack(arrays, axis=1) if task.kind == "multilabel" else arrays[0]


def _fingerprint_files(path: str) -> list[dict]:
    if "://" in path:        # remote storage: Spark read it; its bytes are not hashed here (say so)
        return [{"file": path, "sha256": None, "note": "remote path, not hashed"}]
    p = Path(path)
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    out = []
    for f in files:
        out.append({"file": str(f.relative_to(p)) if p.is_dir() else f.name, "bytes": f.stat().st_size,
                    "sha256": file_sha256(f)})
    return out


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv, "train_encoder", "conf/train_encoder.yaml", TrainEncoderConfig)


if __name__ == "__main__":
    sys.exit(main())
