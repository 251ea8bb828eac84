"""The tuning losses (per example, so a step can weigh and sum them) and the validation metric.

The metric decides labels with the product's one rule (``heads.fitted.decide``: p >= threshold, argmax), so a tuning
run's validation figure is what the heads' report would say of the same logits.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from heads.fitted import DEFAULT_THRESHOLD, decide
from heads.tasks import MISSING


def task_loss(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example loss float[n] (multi-label: mean over the labels known on that row)."""
    if kind == "multiclass":
        return nn.functional.cross_entropy(logits.float(), y, reduction="none")
    if kind == "binary":
        return nn.functional.binary_cross_entropy_with_logits(logits.float()[:, 0], y.float(), reduction="none")
    known = (y != MISSING).float()
    per = nn.functional.binary_cross_entropy_with_logits(logits.float(), y.clamp(min=0).float(), reduction="none")
    return (per * known).sum(1) / known.sum(1).clamp(min=1)


def soft_target_loss(kind: str, logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example distillation loss float[n]: KL(teacher || student) of the temperature-softened distributions
    (multiclass), or the binary cross-entropy against the teacher's softened probabilities (binary, multilabel; mean
    over labels), times T² so its gradients keep their size as T changes."""
    t = temperature
    s, q = logits.float() / t, teacher.float() / t
    if kind == "multiclass":
        per = nn.functional.kl_div(nn.functional.log_softmax(s, 1), nn.functional.log_softmax(q, 1), reduction="none",
                                   log_target=True).sum(1)
    else:
        per = nn.functional.binary_cross_entropy_with_logits(s, torch.sigmoid(q), reduction="none").mean(1)
    return per * t * t


def keep_general_loss(z: torch.Tensor, z_base: torch.Tensor) -> torch.Tensor:
    """Per example: 1 - cos(features, the base encoder's features on the same text), float[n]."""
    return 1 - nn.functional.cosine_similarity(z.float(), z_base.float(), dim=1)


def task_metric(kind: str, logits: np.ndarray, y: np.ndarray) -> float:
    """Accuracy (multiclass, binary) or micro-F1 at the default threshold over known labels (multilabel), with
    labels decided by the product's rule."""
    d = decide(kind, logits, np.full(logits.shape[1], DEFAULT_THRESHOLD, np.float32))
    if kind != "multilabel":
        return float((d.classes == y).mean())
    known = y != MISSING
    pred = d.classes
    tp = float((pred & (y == 1) & known).sum())
    fp = float((pred & (y == 0) & known).sum())
    fn = float((~pred & (y == 1) & known).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1.0)
