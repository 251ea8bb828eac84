"""Train many heads in one pass over stored features.

Each chunk of codes is decoded once and every mini-batch feeds every head (``heads`` share the data pass, not
parameters). Rows whose label is missing for a task are masked out of that task only. Early stopping per head on
validation loss; deterministic for a given seed, data and thread count.
"""
from __future__ import annotations

import copy
import logging
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from encoder.config import ConfigError

from .data import Chunk, ChunkSource
from .metrics import multilabel_metrics, single_label_metrics
from .modules import Head
from .tasks import MISSING, TaskConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by all heads of one training run."""

    epochs: int = 30               # upper bound; early stopping usually ends sooner
    patience: int = 3              # epochs without a better validation loss before a head stops
    batch_rows: int = 256
    lr: float = 1e-3               # Adam
    weight_decay: float = 1e-4     # L2, like the reference logistic regression's C=1 regularisation
    seed: int = 0
    buffer_rows: int = 200_000     # rows shuffled together; a table this small is shuffled as a whole
    val_percent: int = 10          # hash split when the data has no split column

    def validate(self, source: str, prefix: str) -> None:
        for key in ("epochs", "patience", "batch_rows", "buffer_rows"):
            if getattr(self, key) < 1:
                raise ConfigError(source, f"{prefix}{key}", f"= {getattr(self, key)}; expected >= 1")
        if not 0 < self.val_percent < 100:
            raise ConfigError(source, f"{prefix}val_percent", f"= {self.val_percent}; expected 1..99")


@dataclass
class TrainedHead:
    """A fitted head with everything needed to save, apply and report it."""

    task: TaskConfig
    module: Head
    labels: list[str]
    metrics: dict = field(default_factory=dict)
    thresholds: list[float] | None = None   # multilabel: per-label probability thresholds (None = 0.5 each)
    spec_fingerprint: str | None = None     # the feature spec a saved head was trained on (None: just trained)


# ---------------------------------------------------------------------------------------------------------------
def _task_targets(task: TaskConfig, labels: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """-> (targets, known mask). multiclass/binary: int64[n], bool[n]; multilabel: int64[n, L], bool[n, L]."""
    if task.kind == "multilabel":
        y = np.stack([labels[c] for c in task.columns], axis=1)
        return y, y != MISSING
    y = labels[task.columns[0]]
    return y, y != MISSING


class _Stats:
    """First pass: label counts per task and the validation rows (kept decoded; validation sets are small)."""

    def __init__(self, tasks: Sequence[TaskConfig]):
        self.tasks = tasks
        self.counts: dict[str, np.ndarray] = {t.name: np.zeros(0, np.int64) for t in tasks}
        self.train_rows = {t.name: 0 for t in tasks}
        self.val_parts: list[Chunk] = []
        self.rows = 0

    def add(self, chunk: Chunk) -> None:
        self.rows += len(chunk.ids)
        train = ~chunk.is_val
        for t in self.tasks:
            y, known = _task_targets(t, chunk.labels)
            if t.kind == "multilabel":
                pos = ((y == 1) & known)[train].sum(axis=0)
                neg = ((y == 0) & known)[train].sum(axis=0)
                c = np.stack([neg, pos])  # (2, L)
                self.counts[t.name] = c if self.counts[t.name].size == 0 else self.counts[t.name] + c
                self.train_rows[t.name] += int(known[train].any(axis=1).sum())
            else:
                vals = y[train & known]
                if len(vals) and vals.min() < 0:
                    raise ValueError(f"task {t.name!r}: label {vals.min()} in column {t.columns[0]!r}; labels are "
                                     "0..k-1, or -1/null for missing")
                c = np.bincount(vals, minlength=len(self.counts[t.name]))
                old = self.counts[t.name]
                if len(old) < len(c):
                    old = np.pad(old, (0, len(c) - len(old)))
                self.counts[t.name] = old + c
                self.train_rows[t.name] += int(len(vals))
        if chunk.is_val.any():
            v = chunk.is_val
            self.val_parts.append(Chunk(chunk.ids[v], chunk.x[v], {k: a[v] for k, a in chunk.labels.items()}, v[v]))


def _n_classes(task: TaskConfig, stats: _Stats) -> int:
    if task.kind == "multiclass":
        seen = len(stats.counts[task.name])
        val_max = max((int(p.labels[task.columns[0]].max(initial=-1)) for p in stats.val_parts), default=-1)
        n = max(seen, val_max + 1, len(task.labels))
        if task.labels and n > len(task.labels):
            raise ValueError(f"task {task.name!r}: label value {n - 1} but only {len(task.labels)} label names")
        return n
    return 2 if task.kind == "binary" else len(task.columns)


def _label_names(task: TaskConfig, n: int) -> list[str]:
    if task.labels:
        return list(task.labels)
    if task.kind == "multilabel":
        return list(task.columns)
    return [str(i) for i in range(n)]


def _loss_fn(task: TaskConfig, counts: np.ndarray, n_classes: int):
    """Masked loss for one task; class weights (inverse frequency) when asked."""
    if task.kind == "multiclass":
        w = None
        if task.class_weights:
            c = np.pad(counts, (0, n_classes - len(counts))).astype(np.float64)
            w = torch.tensor(np.where(c > 0, c.sum() / (n_classes * np.maximum(c, 1)), 0.0), dtype=torch.float32)
        ce = nn.CrossEntropyLoss(weight=w, ignore_index=MISSING, reduction="sum")

        def loss(logits, y, known):
            return ce(logits, y), int(known.sum())
        return loss
    if task.kind == "binary":
        c = np.pad(counts, (0, 2 - len(counts))).astype(np.float64)
        pos_w = torch.tensor(c[0] / max(c[1], 1.0) if task.class_weights else 1.0, dtype=torch.float32)

        def loss(logits, y, known):
            lg, t = logits[:, 0][known], y[known].float()
            return nn.functional.binary_cross_entropy_with_logits(lg, t, pos_weight=pos_w, reduction="sum"), \
                int(known.sum())
        return loss
    neg, pos = counts if counts.size else (np.zeros(n_classes), np.zeros(n_classes))
    pos_w = torch.tensor(neg / np.maximum(pos, 1.0) if task.class_weights else np.ones(n_classes),
                         dtype=torch.float32)

    def loss(logits, y, known):
        per = nn.functional.binary_cross_entropy_with_logits(logits, y.clamp(min=0).float(), pos_weight=pos_w,
                                                             reduction="none")
        return (per * known.float()).sum(), int(known.sum())
    return loss


def _batches(source: ChunkSource, cfg: TrainConfig, epoch: int) -> Iterator[tuple[np.ndarray, dict]]:
    """Training mini-batches: buffers of rows shuffled by a keyed hash of (id, seed, epoch), so the order does not
    depend on how the reader cut the table into chunks."""
    import pandas as pd

    def flush(buf: list[Chunk]):
        x = np.concatenate([c.x for c in buf])
        labels = {k: np.concatenate([c.labels[k] for c in buf]) for k in buf[0].labels}
        ids = np.concatenate([c.ids for c in buf])
        key = pd.util.hash_array(np.asarray([f"{cfg.seed}:{epoch}:{i}" for i in ids], dtype=object),
                                 categorize=False)
        order = np.lexsort((ids.astype(str), key))
        for s in range(0, len(order), cfg.batch_rows):
            idx = order[s:s + cfg.batch_rows]
            yield x[idx], {k: v[idx] for k, v in labels.items()}

    buf: list[Chunk] = []
    n = 0
    for chunk in source():
        t = ~chunk.is_val
        if not t.any():
            continue
        buf.append(Chunk(chunk.ids[t], chunk.x[t], {k: v[t] for k, v in chunk.labels.items()}, chunk.is_val[t]))
        n += int(t.sum())
        if n >= cfg.buffer_rows:
            yield from flush(buf)
            buf, n = [], 0
    if buf:
        yield from flush(buf)


def train_heads(source: ChunkSource, tasks: Sequence[TaskConfig], dim: int, cfg: TrainConfig = TrainConfig()
                ) -> list[TrainedHead]:
    """Train one head per task from ``source`` (called once per epoch, plus once for label statistics)."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique, got {names}")
    stats = _Stats(tasks)
    for chunk in source():
        stats.add(chunk)
    if not stats.val_parts:
        raise ValueError("no validation rows: add a 'validation' split or let the hash split choose some")
    val = Chunk(np.concatenate([p.ids for p in stats.val_parts]), np.concatenate([p.x for p in stats.val_parts]),
                {k: np.concatenate([p.labels[k] for p in stats.val_parts]) for k in stats.val_parts[0].labels},
                np.ones(sum(len(p.ids) for p in stats.val_parts), bool))
    heads, losses, opts, n_cls = {}, {}, {}, {}
    for t in tasks:
        if stats.train_rows[t.name] == 0:
            raise ValueError(f"task {t.name!r} has no labelled training rows in columns {list(t.columns)}")
        n_cls[t.name] = _n_classes(t, stats)
        # Seeded per task: a head comes out the same whichever other tasks share the pass.
        torch.manual_seed(cfg.seed * 1_000_003 + zlib.crc32(t.name.encode()))
        heads[t.name] = Head(dim, t.n_outputs(n_cls[t.name]), t.hidden if t.head == "mlp" else 0)
        losses[t.name] = _loss_fn(t, stats.counts[t.name], n_cls[t.name])
        opts[t.name] = torch.optim.AdamW(heads[t.name].parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = {n: (float("inf"), copy.deepcopy(h.state_dict()), 0) for n, h in heads.items()}
    active = set(names)
    xv = torch.from_numpy(val.x)
    for epoch in range(cfg.epochs):
        if not active:
            break
        for h in heads.values():
            h.train()
        for xb, lb in _batches(source, cfg, epoch):
            x = torch.from_numpy(xb)   # decoded once, shared by every head
            for t in tasks:
                if t.name not in active:
                    continue
                y, known = _task_targets(t, lb)
                if not known.any():
                    continue
                total, count = losses[t.name](heads[t.name](x), torch.from_numpy(y), torch.from_numpy(known))
                opts[t.name].zero_grad(set_to_none=True)
                (total / count).backward()
                opts[t.name].step()
        for t in tasks:
            if t.name not in active:
                continue
            h = heads[t.name].eval()
            y, known = _task_targets(t, val.labels)
            with torch.no_grad():
                total, count = losses[t.name](h(xv), torch.from_numpy(y), torch.from_numpy(known))
            vloss = float(total) / max(count, 1)
            best_loss, _, since = best[t.name]
            if vloss < best_loss - 1e-6:
                best[t.name] = (vloss, copy.deepcopy(h.state_dict()), 0)
            elif since + 1 >= cfg.patience:
                active.discard(t.name)
                logger.info("head %s stopped after epoch %d (best validation loss %.4f)", t.name, epoch + 1,
                            best_loss)
            else:
                best[t.name] = (best_loss, best[t.name][1], since + 1)
    out = []
    for t in tasks:
        h = heads[t.name]
        h.load_state_dict(best[t.name][1])
        h.eval()
        labels = _label_names(t, n_cls[t.name])
        thresholds = tune_thresholds(t, h, val) if t.kind == "multilabel" and t.tune_thresholds else None
        metrics = evaluate(t, h, val, labels, thresholds)
        metrics.update({"train_rows": stats.train_rows[t.name], "validation_loss": best[t.name][0]})
        out.append(TrainedHead(t, h, labels, metrics, thresholds))
    return out


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def tune_thresholds(task: TaskConfig, head: Head, val: Chunk) -> list[float]:
    """Per label, the probability threshold (grid 0.05..0.95) with the best F1 on validation; 0.5 if unseen."""
    with torch.no_grad():
        p = torch.sigmoid(head(torch.from_numpy(val.x))).numpy()
    y, known = _task_targets(task, val.labels)
    out = []
    for j in range(p.shape[1]):
        t, pj = y[known[:, j], j], p[known[:, j], j]
        if not (t == 1).any():
            out.append(0.5)
            continue
        pred = pj[None, :] >= THRESHOLD_GRID[:, None]                      # (grid, n)
        tp = (pred & (t == 1)).sum(1)
        f1 = 2 * tp / np.maximum(pred.sum(1) + (t == 1).sum(), 1)
        out.append(float(THRESHOLD_GRID[int(np.argmax(f1))]))
    return out


def predict_classes(task: TaskConfig, logits: np.ndarray, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Logits -> predicted class ids (multiclass/binary: int[n]) or 0/1 per label (multilabel: int[n, L])."""
    if task.kind == "multiclass":
        return logits.argmax(axis=1)
    if task.kind == "binary":
        return (logits[:, 0] >= 0).astype(np.int64)
    if thresholds is None:
        return (logits >= 0).astype(np.int64)
    return (1.0 / (1.0 + np.exp(-logits)) >= np.asarray(thresholds)[None, :]).astype(np.int64)


def evaluate(task: TaskConfig, head: Head, data: Chunk, labels: list[str],
             thresholds: Sequence[float] | None = None) -> dict:
    """Validation metrics and the majority-class baseline on the same rows."""
    with torch.no_grad():
        logits = head(torch.from_numpy(data.x)).numpy()
    y, known = _task_targets(task, data.labels)
    pred = predict_classes(task, logits, thresholds)
    if task.kind == "multilabel":
        m = multilabel_metrics(y, pred, known, labels)
        if thresholds is not None:  # tuned on these rows: also show the untuned figures
            at_half = multilabel_metrics(y, predict_classes(task, logits), known, labels)
            m["macro_f1_at_0.5"], m["micro_f1_at_0.5"] = at_half["macro_f1"], at_half["micro_f1"]
        majority = np.array([np.bincount(y[known[:, j], j], minlength=2).argmax() if known[:, j].any() else 0
                             for j in range(y.shape[1])])
        base = multilabel_metrics(y, np.broadcast_to(majority, y.shape), known, labels)
        m["majority_macro_f1"], m["majority_micro_f1"] = base["macro_f1"], base["micro_f1"]
        return m
    n = len(labels)
    m = single_label_metrics(y[known], pred[known], n)
    if known.any():
        maj = np.bincount(y[known], minlength=n).argmax()
        base = single_label_metrics(y[known], np.full(int(known.sum()), maj), n)
        m["majority_accuracy"], m["majority_macro_f1"] = base["accuracy"], base["macro_f1"]
    return m
