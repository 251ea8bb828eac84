"""One task's labelled texts for tuning, and what a tuning run returns."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from heads.modules import Head
from heads.tasks import MISSING, LabelError, TaskConfig


@dataclass
class TaskData:
    """One task's labelled texts: train rows and validation rows (labels as heads/train reads them)."""

    task: TaskConfig
    n_classes: int                        # multiclass: classes; binary: 2; multilabel: labels
    train_texts: list[str]
    train_y: np.ndarray                   # int64[n] or int64[n, L]; -1 = unknown
    val_texts: list[str]
    val_y: np.ndarray
    # Knowledge distillation (a per-task student): the teacher's logits float32[n, outputs] on the training texts.
    # The loss is then distill_alpha x the hard-label loss + (1 - distill_alpha) x T² x the soft-target loss.
    train_teacher_logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.train_teacher_logits is not None and self.train_teacher_logits.shape[0] != len(self.train_texts):
            raise ValueError(f"task {self.task.name!r}: {self.train_teacher_logits.shape[0]} teacher logit rows for "
                             f"{len(self.train_texts)} training texts")
        for part, texts, y in (("train", self.train_texts, self.train_y), ("validation", self.val_texts, self.val_y)):
            if len(texts) != len(y):
                raise ValueError(f"task {self.task.name!r}: {len(texts)} {part} texts but {len(y)} label rows")
            known = (y != MISSING) if y.ndim == 1 else (y != MISSING).any(axis=1)
            if not known.all():     # a row with no label for this task carries nothing for it
                raise LabelError(f"task {self.task.name!r}: {int((~known).sum())} {part} rows have no label; drop "
                                 "them before training (the job does)")
        if len(self.train_texts) == 0:
            raise LabelError(f"task {self.task.name!r} has no training rows")
        if len(self.val_texts) == 0:
            raise LabelError(f"task {self.task.name!r} has no validation rows (early stopping needs them)")
        if self.task.kind == "multiclass" and self.n_classes < 2:
            raise LabelError(f"task {self.task.name!r} has {self.n_classes} class; a multiclass task needs >= 2")

    @property
    def n_outputs(self) -> int:
        return self.task.n_outputs(self.n_classes)

    def loss_divisor(self, scaling: str) -> float:
        """Muppet's scaling: log of the number of classes the head chooses among (2 for binary and each label)."""
        if scaling != "log_classes":
            return 1.0
        return math.log(self.n_classes if self.task.kind == "multiclass" else 2)


@dataclass
class TrainedEncoder:
    """The outcome: the fine-tuned transformer (best validation state), its task heads and the run's history."""

    model: Any
    heads: dict[str, Head]
    history: list[dict]                   # one record per validation pass: step, seconds, loss, per-task metrics
    best_step: int
    best_score: float
    steps: int
    seconds: float
    examples_seen: int
