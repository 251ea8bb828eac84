"""Classification metrics on numpy arrays (no scikit-learn at run time)."""
from __future__ import annotations

import numpy as np


def f1_per_class(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """F1 of each class 0..n_classes-1 (0 where a class is neither present nor predicted)."""
    out = np.zeros(n_classes)
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        out[c] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return out


def single_label_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """Accuracy and macro-F1 over the labelled rows (macro over classes present in truth or prediction)."""
    if len(y_true) == 0:
        return {"rows": 0, "accuracy": None, "macro_f1": None}
    f1 = f1_per_class(y_true, y_pred, n_classes)
    present = np.union1d(np.unique(y_true), np.unique(y_pred))
    return {"rows": int(len(y_true)), "accuracy": float(np.mean(y_true == y_pred)),
            "macro_f1": float(f1[present].mean())}


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray, labels: list[str]) -> dict:
    """Per-label F1, macro-F1 and micro-F1 over known entries; y_* int[n, L] of 0/1, mask bool[n, L].

    A label with no positive among the evaluated rows has no meaningful F1 (counting it as 0 drags macro-F1 down for
    labels that simply did not occur): it is reported as None, and macro-F1 averages the scored labels only, with
    their count in ``scored_labels``.
    """
    per: dict[str, float | None] = {}
    tp_all = fp_all = fn_all = 0
    for j, name in enumerate(labels):
        m = mask[:, j]
        t, p = y_true[m, j], y_pred[m, j]
        tp, fp, fn = int(np.sum((t == 1) & (p == 1))), int(np.sum((t == 0) & (p == 1))), int(np.sum((t == 1) & (p == 0)))
        per[name] = 2 * tp / (2 * tp + fp + fn) if tp + fn else None
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
    scored = [v for v in per.values() if v is not None]
    micro = 2 * tp_all / (2 * tp_all + fp_all + fn_all) if tp_all + fp_all + fn_all else 0.0
    exact = float(np.mean(np.all((y_true == y_pred) | ~mask, axis=1))) if len(y_true) else None
    return {"rows": int(mask.any(axis=1).sum()), "macro_f1": float(np.mean(scored)) if scored else None,
            "micro_f1": float(micro), "exact_match": exact, "scored_labels": len(scored), "labels": len(labels),
            "per_label_f1": per}


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[list[int]]:
    """Counts[true][predicted] over classes 0..n_classes-1 (int[n] each), as nested lists of Python ints.

    Plain lists so the matrix travels in ``metrics.json`` and ``head.json`` unchanged; the training report draws it.
    """
    counts = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(counts, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return counts.tolist()
