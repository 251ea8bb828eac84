"""A fitted head and the one decision rule that turns its outputs into probabilities and labels.

Like scikit-learn's ``LinearClassifierMixin.predict``, there is one rule and every consumer calls it: the training
report's metrics, the threshold tuning and the predictions table. It works on whole float32 batches (no loop per
row), and the binary rule works column-wise, so many binary heads can be decided in one call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .modules import Head
from .tasks import TaskConfig

DEFAULT_THRESHOLD = 0.5


def sigmoid(z: np.ndarray) -> np.ndarray:
    """float32 logistic function (the one used everywhere). numpy's, not torch's: numpy gives every element the same
    value wherever it sits in the array, torch's vectorised kernel does not (checked), and a row's label must not
    depend on its position in a batch."""
    z = np.asarray(z, dtype=np.float32)
    return (np.float32(1.0) / (np.float32(1.0) + np.exp(-z))).astype(np.float32, copy=False)


def softmax(z: np.ndarray) -> np.ndarray:
    """float32 softmax over the last axis."""
    z = np.asarray(z, dtype=np.float32)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def threshold_rule(z: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid outputs, column-wise: logits float[n, m], thresholds float32[m] -> (on bool[n, m], p float32[n, m]).

    A label is on when its probability reaches its threshold (p >= t, both float32): a probability exactly at the
    threshold counts as on. Binary heads (one column each) and multi-label heads (one column per label) share it.
    """
    p = sigmoid(z)
    return p >= np.asarray(thresholds, dtype=np.float32), p


def chosen_probability(on: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Binary heads: the probability of the label chosen (p where on, 1 - p where off), float32. Exact IEEE
    operations only, so torch's multi-threaded kernels give the same values as numpy's, wherever a row sits."""
    pt = torch.from_numpy(np.asarray(p, dtype=np.float32))
    return torch.where(torch.from_numpy(np.asarray(on)), pt, 1.0 - pt).numpy()


def binary_rule(z: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary heads, column-wise: logits float[n, m], thresholds float32[m] -> (on bool[n, m], probability of the
    label chosen float32[n, m], positive probability float32[n, m]). Many binary heads are decided in one call."""
    on, p = threshold_rule(z, thresholds)
    return on, chosen_probability(on, p), p


def argmax_rule(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs: logits float[n, k] -> (class int64[n], its probability float32[n]); ties go to the first."""
    p = softmax(z)
    pred = p.argmax(axis=1)
    return pred, p[np.arange(len(pred)), pred]


@dataclass(frozen=True)
class Decisions:
    """What a head decided for a batch of rows.

    multiclass/binary: ``classes`` int64[n] (index into the head's labels), ``scores`` float32[n] (probability of
    that class); multilabel: ``classes`` bool[n, L] (label on/off), ``scores`` float32[n, L] (every label's
    probability).
    """

    classes: np.ndarray
    scores: np.ndarray


@dataclass
class FittedHead:
    """A trained head with everything needed to save, apply and report it."""

    task: TaskConfig
    module: Head
    labels: list[str]
    metrics: dict = field(default_factory=dict)
    thresholds: list[float] | None = None   # multilabel: per-label probability thresholds (None = 0.5 each)
    spec_fingerprint: str | None = None     # the feature spec a saved head was trained on (None: just trained)

    def threshold_array(self) -> np.ndarray:
        """float32[outputs] thresholds for the sigmoid rule (binary: one; multilabel: one per label)."""
        n = self.module.n_outputs
        return np.asarray(self.thresholds if self.thresholds is not None else [DEFAULT_THRESHOLD] * n, np.float32)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Head inputs float32[n, dim] -> logits float32[n, outputs] (this head alone)."""
        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    def decide(self, logits: np.ndarray, thresholds: Sequence[float] | None = None) -> Decisions:
        """The decision rule for this head's logits; ``thresholds`` overrides the stored ones (used while tuning)."""
        return decide(self.task.kind, logits,
                      self.threshold_array() if thresholds is None else np.asarray(thresholds, np.float32))


def decide(kind: str, logits: np.ndarray, thresholds: np.ndarray) -> Decisions:
    """The one rule: logits float32[n, outputs] -> Decisions (see ``Decisions`` for shapes)."""
    if kind == "multiclass":
        return Decisions(*argmax_rule(logits))
    if kind == "binary":
        on, chosen, _ = binary_rule(logits[:, :1], thresholds[:1])
        return Decisions(on[:, 0].astype(np.int64), chosen[:, 0])
    return Decisions(*threshold_rule(logits, thresholds))
