"""Predictions table: one row per input id; per task the predicted label and its score(s).

Schema (``predictions_schema``), for each task in head-name order:
- multiclass / binary: ``<task>`` string (predicted label name), ``<task>_score`` float (its probability);
- multilabel: ``<task>`` list<string> (labels whose probability reaches that label's threshold, stored in
  ``head.json``; 0.5 when not tuned), ``<task>_scores``
  list<float> (every label's probability, in the label order written in the heads' ``head.json`` and the manifest).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from encoder.quantize import codes_from_column

from .score import FusedScorer
from .train import TrainedHead

PREDICTIONS_FORMAT_VERSION = 1


def predictions_schema(heads: Sequence[TrainedHead], id_type: pa.DataType = pa.string()) -> pa.Schema:
    fields = [pa.field("id", id_type, nullable=False)]
    for h in heads:
        n = h.task.name
        if h.task.kind == "multilabel":
            fields += [pa.field(n, pa.list_(pa.string()), nullable=False),
                       pa.field(f"{n}_scores", pa.list_(pa.float32()), nullable=False)]
        else:
            fields += [pa.field(n, pa.string(), nullable=False), pa.field(f"{n}_score", pa.float32(), nullable=False)]
    return pa.schema(fields)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def predict_batch(batch: pa.RecordBatch, scorer: FusedScorer, schema: pa.Schema) -> pa.RecordBatch:
    """(id, embedding) batch -> predictions batch with ``schema``; same rows, same order."""
    codes = codes_from_column(batch.column("embedding").to_pylist(), scorer.spec.n_bytes)
    arrays: list[pa.Array] = [batch.column("id").cast(schema.field("id").type)]
    for h, logits in zip(scorer.heads, scorer.logits(codes)):
        labels = pa.array(h.labels, pa.string())
        if h.task.kind == "multilabel":
            p = _sigmoid(logits).astype(np.float32)
            on = p >= np.asarray(h.thresholds if h.thresholds is not None else [0.5] * p.shape[1], np.float32)
            offsets = np.concatenate([[0], np.cumsum(on.sum(axis=1))]).astype(np.int32)
            names = pc.take(labels, pa.array(np.nonzero(on)[1]))
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), names))
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), p.shape[1]).cast(
                pa.list_(pa.float32())))
        elif h.task.kind == "binary":
            p1 = _sigmoid(logits[:, 0])
            pred = (p1 >= 0.5).astype(np.int64)
            arrays += [pc.take(labels, pa.array(pred)), pa.array(np.where(pred == 1, p1, 1 - p1).astype(np.float32))]
        else:
            p = _softmax(logits)
            pred = p.argmax(axis=1)
            arrays += [pc.take(labels, pa.array(pred)), pa.array(p[np.arange(len(pred)), pred].astype(np.float32))]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
