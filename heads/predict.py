"""Predictions table: one row per input id; per task the predicted label and its score(s).

Schema (``predictions_schema``), for each task in head-name order:
- multiclass / binary: ``<task>`` string (predicted label name), ``<task>_score`` float (its probability);
- multilabel: ``<task>`` list<string> (labels whose probability reaches that label's threshold, stored in
  ``head.json``; 0.5 when not tuned), ``<task>_scores``
  list<float> (every label's probability, in the label order written in the heads' ``head.json`` and the manifest).

Labels come from the one decision rule (``heads.fitted``), applied to whole batches: every binary head of a batch is
decided in one call, and every single-label head's label names are gathered with one Arrow ``take`` whose result
is sliced per head (zero-copy), so the cost per head is a few vector operations, not a pass over the rows.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from encoder.quantize import codes_from_column
from encoder.schema import EMBEDDING, ID

from .fitted import FittedHead, chosen_probability, decide, threshold_rule
from .score import FusedScorer

PREDICTIONS_FORMAT_VERSION = 1


def score_column(task: str, kind: str) -> str:
    """Name of a task's score column: ``<task>_scores`` (multilabel, a list) or ``<task>_score``."""
    return f"{task}_scores" if kind == "multilabel" else f"{task}_score"


def predictions_schema(heads: Sequence[FittedHead], id_type: pa.DataType = pa.string()) -> pa.Schema:
    fields = [pa.field(ID, id_type, nullable=False)]
    for h in heads:
        n, kind = h.task.name, h.task.kind
        if kind == "multilabel":
            fields += [pa.field(n, pa.list_(pa.string()), nullable=False),
                       pa.field(score_column(n, kind), pa.list_(pa.float32()), nullable=False)]
        else:
            fields += [pa.field(n, pa.string(), nullable=False),
                       pa.field(score_column(n, kind), pa.float32(), nullable=False)]
    return pa.schema(fields)


class _Layout:
    """Per scorer: which heads are binary / multiclass / multilabel, their logit columns, and one dictionary of
    every single-label head's label names (head j's names start at ``offset[j]``)."""

    def __init__(self, scorer: FusedScorer):
        heads = scorer.heads
        self.binary = [i for i, h in enumerate(heads) if h.task.kind == "binary"]
        self.multiclass = [i for i, h in enumerate(heads) if h.task.kind == "multiclass"]
        self.single = sorted(self.binary + self.multiclass)
        self.row = {i: r for r, i in enumerate(self.single)}          # head index -> row of the class matrix
        self.binary_cols = np.asarray([scorer.out_slices[i][0] for i in self.binary], np.int64)
        self.binary_thresholds = np.concatenate([heads[i].threshold_array() for i in self.binary]) \
            if self.binary else np.zeros(0, np.float32)
        offsets, names = [], []
        for i in self.single:
            offsets.append(len(names))
            names += heads[i].labels
        self.offsets = np.asarray(offsets, np.int32)
        self.names = pa.array(names, pa.string())
        self.label_arrays = [pa.array(h.labels, pa.string()) for h in heads]


def predict_batch(batch: pa.RecordBatch, scorer: FusedScorer, schema: pa.Schema) -> pa.RecordBatch:
    """(id, embedding) batch -> predictions batch with ``schema``; same rows, same order."""
    layout = scorer.__dict__.get("_predict_layout")
    if layout is None:  # built once per scorer (a worker keeps its scorer for every batch)
        layout = scorer.__dict__["_predict_layout"] = _Layout(scorer)
    heads = scorer.heads
    codes = codes_from_column(batch.column(EMBEDDING), scorer.spec.n_bytes)
    logits = scorer.logits_array(codes)
    n = len(codes)
    k = len(layout.single)
    classes = np.empty((k, n), np.int32)      # single-label heads: chosen class, one row per head
    scores = np.empty((k, n), np.float32)     # and its probability
    if layout.binary:
        on, p = threshold_rule(logits[:, layout.binary_cols], layout.binary_thresholds)
        rows = [layout.row[i] for i in layout.binary]
        classes[rows] = on.T
        scores[rows] = chosen_probability(on, p).T
    for i in layout.multiclass:
        s, e = scorer.out_slices[i]
        d = decide("multiclass", logits[:, s:e], np.zeros(0, np.float32))
        classes[layout.row[i]] = d.classes
        scores[layout.row[i]] = d.scores
    names = pc.take(layout.names, pa.array((classes + layout.offsets[:, None]).ravel())) if k else None
    arrays: list[pa.Array] = [batch.column(ID).cast(schema.field(ID).type)]
    for i, h in enumerate(heads):
        if h.task.kind == "multilabel":
            s, e = scorer.out_slices[i]
            d = h.decide(logits[:, s:e])
            offsets = np.zeros(n + 1, np.int32)
            np.cumsum(d.classes.sum(axis=1), out=offsets[1:])
            label_names = pc.take(layout.label_arrays[i], pa.array(np.nonzero(d.classes)[1].astype(np.int32)))
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), label_names))
            arrays.append(pa.ListArray.from_arrays(pa.array(np.arange(0, n * (e - s) + 1, e - s, dtype=np.int32)),
                                                   pa.array(np.ascontiguousarray(d.scores).ravel())))
        else:
            r = layout.row[i]
            arrays += [names.slice(r * n, n), pa.array(scores[r])]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
