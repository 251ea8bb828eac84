"""What the heads predicted, at a glance: per task, how many rows got each label and how confident the scores are.

Writes ``report.md`` (per task a table of rows per label with their share) and one ``task_<name>.png`` per task (label
distribution beside the score histogram) into a folder, normally the apply job's run folder beside ``predictions/``.
Every figure comes from one Spark aggregation over the predictions table: one row returns to the driver, whatever the
table's size (no ``collect`` of rows, no ``toPandas``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from heads.fitted import FittedHead
from heads.predict import score_column
from jobs.charts import distribution_png

logger = logging.getLogger(__name__)

BINS = 20                 # score histogram: 20 equal bins over [0, 1], [k/20, (k+1)/20), the last one closed
REPORT = "report.md"
NO_LABEL = "(no label)"   # multilabel rows on which no label reached its threshold


def chart_name(task: str) -> str:
    """File name of a task's chart, beside report.md (the report links it by this name)."""
    return f"task_{task}.png"


@dataclass(frozen=True)
class TaskSummary:
    """One task's aggregated predictions. ``labels``: label -> rows predicted with it (multilabel: rows carrying
    it, so they may add up to more or fewer than the rows); ``no_label``: multilabel rows with no label (None for
    single-label tasks); ``histogram``: BINS counts of the scores in ``score_column`` (multilabel: every label's
    score of every row, together)."""

    name: str
    kind: str
    labels: dict[str, int]
    no_label: int | None
    histogram: list[int]
    score_column: str


@dataclass(frozen=True)
class PredictionSummary:
    rows: int
    tasks: list[TaskSummary]


# -- aggregate (Spark) ------------------------------------------------------------------------------------------
def score_values(df: Any, column: str):
    """A score column as one array<double> expression, whatever its Spark type: a float (one score per row), a list
    of floats, or a struct with one float field per label (the multilabel column's coming layout)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    t = df.schema[column].dataType
    col = F.col(column)
    if isinstance(t, T.ArrayType) and isinstance(t.elementType, T.NumericType):
        return F.transform(col, lambda x: x.cast("double"))
    if isinstance(t, T.StructType) and all(isinstance(f.dataType, T.NumericType) for f in t.fields):
        return F.array(*[col.getField(f.name).cast("double") for f in t.fields])
    if isinstance(t, T.NumericType):
        return F.array(col.cast("double"))
    raise TypeError(f"score column {column!r} has type {t.simpleString()}; expected a float, a list of floats or a "
                    "struct of floats")


def _bin(x):
    """Histogram bin of a score: floor(x * BINS), clamped to 0..BINS-1 so 1.0 falls in the last bin and no score is
    left out of the counts."""
    from pyspark.sql import functions as F

    return F.greatest(F.least(F.floor(x * BINS), F.lit(BINS - 1)), F.lit(0))


def _task_exprs(df: Any, head: FittedHead, i: int) -> list:
    """The aggregate expressions of one task, aliased ``t<i>_l<j>`` (label j), ``t<i>_none``, ``t<i>_h<b>`` (bin b):
    positional names, since label names may hold any character."""
    from pyspark.sql import functions as F

    name, kind = head.task.name, head.task.kind
    col = F.col(name)
    if kind == "multilabel":
        exprs = [F.count(F.when(F.array_contains(col, lab), 1)).alias(f"t{i}_l{j}")
                 for j, lab in enumerate(head.labels)]
        exprs.append(F.count(F.when(F.size(col) == 0, 1)).alias(f"t{i}_none"))
    else:
        exprs = [F.count(F.when(col == F.lit(lab), 1)).alias(f"t{i}_l{j}") for j, lab in enumerate(head.labels)]
    bins = F.transform(score_values(df, score_column(name, kind)), _bin)
    exprs += [F.coalesce(F.sum(F.size(F.filter(bins, _equals(b)))), F.lit(0)).alias(f"t{i}_h{b}")
              for b in range(BINS)]
    return exprs


def _equals(b: int):
    """``k == b`` as a one-argument lambda (Spark reads a second argument as the element's index)."""
    return lambda k: k == b


def summarize(df: Any, heads: Sequence[FittedHead]) -> PredictionSummary:
    """Rows per label and score histograms of every task, in one aggregation (one row back to the driver).

    A single-label task whose label counts do not add up to the rows holds a label its head does not know: that is
    an error, not a footnote, since the report would misstate the table."""
    from pyspark.sql import functions as F

    exprs = [F.count(F.lit(1)).alias("rows")]
    for i, h in enumerate(heads):
        exprs += _task_exprs(df, h, i)
    agg = df.agg(*exprs).first().asDict()
    rows = int(agg["rows"])
    tasks = []
    for i, h in enumerate(heads):
        labels = {lab: int(agg[f"t{i}_l{j}"]) for j, lab in enumerate(h.labels)}
        multilabel = h.task.kind == "multilabel"
        if not multilabel and sum(labels.values()) != rows:
            raise RuntimeError(f"task {h.task.name!r}: {rows - sum(labels.values())} of {rows} rows hold a label "
                               f"outside the head's labels {h.labels}")
        tasks.append(TaskSummary(h.task.name, h.task.kind, labels, int(agg[f"t{i}_none"]) if multilabel else None,
                                 [int(agg[f"t{i}_h{b}"]) for b in range(BINS)],
                                 score_column(h.task.name, h.task.kind)))
    return PredictionSummary(rows, tasks)


# -- render (driver, aggregated numbers only) -------------------------------------------------------------------
def _share(n: int, rows: int) -> str:
    return f"{100 * n / rows:.1f}%" if rows else "—"


def _label_rows(t: TaskSummary) -> list[tuple[str, int]]:
    """The labels in the head's order, then (multilabel) the rows with none: the table's and the chart's rows."""
    out = list(t.labels.items())
    return out + [(NO_LABEL, t.no_label)] if t.no_label is not None else out


def report_markdown(summary: PredictionSummary) -> str:
    """report.md: per task, rows per predicted label with shares, and its chart."""
    lines = ["# Predictions report", "",
             f"{summary.rows:,} rows. Per task: the rows that got each label, and a chart of that distribution beside "
             f"the histogram of the scores ({BINS} bins over [0, 1]). Multi-label tasks count the rows carrying each "
             "label, so a row may count under several labels, or under none.", ""]
    for t in summary.tasks:
        what = ("every label's probability, all labels together" if t.kind == "multilabel"
                else "the probability of the predicted label")
        lines += [f"## {t.name} ({t.kind})", "", "| label | rows | share |", "|---|---|---|"]
        lines += [f"| {lab} | {n:,} | {_share(n, summary.rows)} |" for lab, n in _label_rows(t)]
        lines += ["", f"Scores: `{t.score_column}`, {what}.", "",
                  f"![{t.name}: predicted labels and scores]({chart_name(t.name)})", ""]
    return "\n".join(lines)


def write_chart(folder: Path, t: TaskSummary, rows: int) -> Path:
    """A task's PNG: label distribution (left) and score histogram (right)."""
    names, counts = zip(*_label_rows(t))
    multilabel = t.kind == "multilabel"
    return distribution_png(folder / chart_name(t.name), list(names), list(counts), t.histogram,
                            f"{t.name} ({t.kind}): {rows:,} rows",
                            "each label's probability" if multilabel else "probability of the predicted label",
                            log_scores=multilabel)


def write_report(predictions: Any, heads: Sequence[FittedHead], folder: str | Path) -> PredictionSummary:
    """Aggregate the predictions (a Spark DataFrame, or the path of a predictions Parquet folder, read with the
    active SparkSession) and write ``report.md`` and one ``task_<name>.png`` per task into ``folder``."""
    folder = Path(folder)
    df = predictions
    if isinstance(predictions, (str, Path)):
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is None:
            raise ValueError(f"reading {predictions} needs an active SparkSession; pass a DataFrame instead")
        df = spark.read.parquet(Path(predictions).absolute().as_uri())
    summary = summarize(df, heads)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REPORT).write_text(report_markdown(summary), encoding="utf-8")
    for t in summary.tasks:
        write_chart(folder, t, summary.rows)
    logger.info("prediction report: %d tasks over %d rows in %s", len(summary.tasks), summary.rows, folder / REPORT)
    return summary
