"""Predictions table: one row per input id; the embedding table's passthrough columns; per task the predicted label
and its score(s).

Schema (``predictions_schema``): ``id``, the passthrough columns (e.g. ``split``, ``text``), then for each task in
head-name order:
- multiclass: ``<task>`` string (predicted label name), ``<task>_score`` float (its probability);
- binary: the same, plus ``<task>_positive_score`` float: the probability of the positive label (the head's second
  label, named in the field's metadata and the manifest), to rank by without a CASE expression;
- multilabel: ``<task>`` list<string> (labels whose probability reaches that label's threshold, stored in
  ``head.json``; 0.5 when not tuned), ``<task>_scores`` struct<label: float, ...>: every label's probability under
  its own name (``emotions_scores.joy`` in Spark SQL and DuckDB). A struct, not a map (which repeats every key in
  every row) nor a list with the order in metadata (which SQL cannot see).

Labels come from the one decision rule (``heads.fitted``), applied to whole batches: every binary head of a batch is
decided in one call, and the binary heads' label columns are built a group at a time (one gather of name bytes, or
one Arrow ``take``) and sliced per head (zero-copy), so the cost per head is a few vector operations.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from encoder.quantize import codes_from_column
from encoder.schema import EMBEDDING, ID

from .fitted import FittedHead, binary_rule
from .score import FusedScorer

PREDICTIONS_FORMAT_VERSION = 2   # 2: multilabel scores as a struct, binary positive score, passthrough columns


def score_column(task: str, kind: str) -> str:
    """Name of a task's score column: ``<task>_scores`` (multilabel, a struct) or ``<task>_score``."""
    return f"{task}_scores" if kind == "multilabel" else f"{task}_score"


def positive_column(task: str) -> str:
    """A binary task's positive-class probability column."""
    return f"{task}_positive_score"


def task_columns(task: str, kind: str) -> tuple[str, ...]:
    """Every predictions-table column of one task, in table order."""
    return (task, score_column(task, kind)) + ((positive_column(task),) if kind == "binary" else ())


def predictions_schema(heads: Sequence[FittedHead], id_type: pa.DataType = pa.string(),
                       passthrough: pa.Schema | None = None) -> pa.Schema:
    """id, passthrough columns, then each task's columns. A passthrough column named like a task column is an
    error naming both."""
    fields = [pa.field(ID, id_type, nullable=False)]
    taken = {ID} | {c for h in heads for c in task_columns(h.task.name, h.task.kind)}
    for f in passthrough or []:
        if f.name in taken:
            raise ValueError(f"the embedding table's passthrough column {f.name!r} has the name of a predictions "
                             "column (id or a task's column); rename the task")
        fields.append(f)
    for h in heads:
        n, kind = h.task.name, h.task.kind
        if kind == "multilabel":
            fields += [pa.field(n, pa.list_(pa.string()), nullable=False),
                       pa.field(score_column(n, kind), pa.struct([pa.field(label, pa.float32(), nullable=False)
                                                                  for label in h.labels]), nullable=False)]
        else:
            fields += [pa.field(n, pa.string(), nullable=False),
                       pa.field(score_column(n, kind), pa.float32(), nullable=False)]
        if kind == "binary":
            fields.append(pa.field(positive_column(n), pa.float32(), nullable=False,
                                   metadata={"positive_label": h.labels[1]}))
    return pa.schema(fields)


class _Layout:
    """Per scorer: which heads are binary / multiclass / multilabel and where their logits are. Binary heads whose
    two label names have the same byte length (``"0"``/``"1"``, ``yes``/``not``...) are grouped by that length: their
    label columns are built straight from name bytes with fixed offsets; the others share one dictionary for one
    Arrow ``take``."""

    def __init__(self, scorer: FusedScorer):
        heads = scorer.heads
        self.binary = [i for i, h in enumerate(heads) if h.task.kind == "binary"]
        self.multiclass = [i for i, h in enumerate(heads) if h.task.kind == "multiclass"]
        self.binary_cols = np.asarray([scorer.out_slices[i][0] for i in self.binary], np.int64)
        self.binary_are_all = self.binary_cols.tolist() == list(range(scorer.n_out))
        self.binary_thresholds = np.concatenate([heads[i].threshold_array() for i in self.binary]) \
            if self.binary else np.zeros(0, np.float32)
        encoded = [[name.encode("utf-8") for name in heads[i].labels] for i in self.binary]
        widths = [len(a) if len(a) == len(b) else -1 for a, b in encoded]
        # width -> (positions r in self.binary, name bytes uint8[2 * heads, width]); -1 = names of unequal length
        self.groups: dict[int, tuple[np.ndarray, np.ndarray | pa.Array]] = {}
        for w in sorted(set(widths)):
            rows = np.asarray([r for r, x in enumerate(widths) if x == w], np.int64)
            names = [name for r in rows for name in encoded[r]]
            table = (np.frombuffer(b"".join(names), np.uint8).reshape(len(names), w) if w >= 0
                     else pa.array([n.decode("utf-8") for n in names], pa.string()))
            self.groups[w] = (rows, table)
        self.label_arrays = [pa.array(h.labels, pa.string()) for h in heads]
        self._offsets: dict[tuple[int, int], pa.Buffer] = {}
        self._first_task: int | None = None

    def first_task_column(self, schema: pa.Schema, heads) -> int:
        """Index of the first task column in ``schema`` (columns between id and it are passthrough)."""
        if self._first_task is None:
            self._first_task = schema.get_field_index(heads[0].task.name) if heads else len(schema)
        return self._first_task

    def fixed_offsets(self, n: int, width: int) -> pa.Buffer:
        key = (n, width)
        if key not in self._offsets:
            self._offsets = {key: pa.py_buffer((np.arange(n + 1, dtype=np.int32) * width).tobytes())}
        return self._offsets[key]

    def binary_labels(self, on_t: np.ndarray) -> list[pa.Array]:
        """on bool[binary heads, n] -> one string column per binary head (in ``self.binary`` order)."""
        m, n = on_t.shape
        out: list[pa.Array | None] = [None] * m
        for width, (rows, table) in self.groups.items():
            idx = on_t[rows].astype(np.int32)
            idx += np.arange(0, 2 * len(rows), 2, dtype=np.int32)[:, None]
            if width < 0:
                taken = pc.take(table, pa.array(idx.ravel()))
                cols = [taken.slice(k * n, n) for k in range(len(rows))]
            else:  # fixed width: the name bytes of every row, back to back; offsets are k * width
                data = pa.py_buffer(np.ascontiguousarray(table[idx.ravel()]))   # type: ignore[index]
                offsets = self.fixed_offsets(n, width)
                cols = [pa.StringArray.from_buffers(n, offsets, data.slice(k * n * width, n * width))
                        for k in range(len(rows))]
            for k, r in enumerate(rows):
                out[r] = cols[k]
        return out  # type: ignore[return-value]


def predict_batch(batch: pa.RecordBatch, scorer: FusedScorer, schema: pa.Schema) -> pa.RecordBatch:
    """(id, embedding) batch -> predictions batch with ``schema``; same rows, same order."""
    layout = scorer.__dict__.get("_predict_layout")
    if layout is None:  # built once per scorer (a worker keeps its scorer for every batch)
        layout = scorer.__dict__["_predict_layout"] = _Layout(scorer)
    heads = scorer.heads
    codes = codes_from_column(batch.column(EMBEDDING), scorer.spec.n_bytes)
    logits = scorer.logits_array(codes)
    n = len(codes)
    names: dict[int, pa.Array] = {}
    scores: dict[int, np.ndarray] = {}
    positive: dict[int, np.ndarray] = {}
    if layout.binary:  # every binary head in one call of the rule, one take, one transpose
        z = logits if layout.binary_are_all else logits[:, layout.binary_cols]
        z_t = torch.from_numpy(z).T.contiguous().numpy()                 # (heads, rows): each head's row contiguous
        on_t, chosen_t, p_t = binary_rule(z_t.T, layout.binary_thresholds)   # the one rule, on the (rows, heads) view
        for r, (i, col) in enumerate(zip(layout.binary, layout.binary_labels(on_t.T))):
            names[i], scores[i], positive[i] = col, chosen_t.T[r], p_t.T[r]
    for i in layout.multiclass:
        s, e = scorer.out_slices[i]
        d = heads[i].decide(logits[:, s:e])
        names[i], scores[i] = pc.take(layout.label_arrays[i], pa.array(d.classes.astype(np.int32))), d.scores
    arrays: list[pa.Array] = [batch.column(ID).cast(schema.field(ID).type)]
    arrays += [batch.column(name) for name in schema.names[1:layout.first_task_column(schema, heads)]]
    for i, h in enumerate(heads):
        if h.task.kind == "multilabel":
            s, e = scorer.out_slices[i]
            d = h.decide(logits[:, s:e])
            offsets = np.zeros(n + 1, np.int32)
            np.cumsum(d.classes.sum(axis=1), out=offsets[1:])
            label_names = pc.take(layout.label_arrays[i], pa.array(np.nonzero(d.classes)[1].astype(np.int32)))
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), label_names))
            scores_t = np.ascontiguousarray(d.scores.T)                   # one contiguous row per label
            arrays.append(pa.StructArray.from_arrays([pa.array(col) for col in scores_t],
                                                     fields=list(schema.field(score_column(h.task.name, "multilabel"))
                                                                 .type)))
        else:
            arrays += [names[i], pa.array(scores[i])]
            if i in positive:
                arrays.append(pa.array(positive[i]))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
