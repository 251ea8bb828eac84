"""Train many heads in one pass over stored features.

Each chunk of codes is decoded once and every mini-batch feeds every head (``heads`` share the data pass, not
parameters). Rows whose label is missing for a task are masked out of that task only. Early stopping per head on
validation loss; the final figures come from the test rows when the data has them, else from validation (and say
so). Deterministic for a given seed, data and thread count.
"""
from __future__ import annotations

import copy
import logging
import zlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from encoder.typed_config import ConfigError, require_at_least

from .data import TEST, VALIDATION, Chunk, ChunkSource
from .fitted import FittedHead, threshold_rule
from .metrics import confusion_counts, multilabel_metrics, single_label_metrics
from .modules import Head
from .tasks import MISSING, LabelError, TaskConfig, check_label_values, check_tasks, class_count, first_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by all heads of one training run."""

    epochs: int = 30               # upper bound; early stopping usually ends sooner
    patience: int = 3              # epochs without a better validation loss before a head stops
    batch_rows: int = 256
    lr: float = 1e-3               # AdamW; inputs are on one scale for every quantization (heads/inputs.py)
    weight_decay: float = 1e-4     # L2, like the reference logistic regression's C=1 regularisation
    seed: int = 0
    buffer_rows: int = 200_000     # rows shuffled together; a table this small is shuffled as a whole
    val_percent: int = 10          # hash split when the data has no split column or no validation rows

    def validate(self, source: str, prefix: str) -> None:
        require_at_least(self, ("epochs", "patience", "batch_rows", "buffer_rows"), 1, source, prefix)
        for key in ("lr", "weight_decay"):
            if getattr(self, key) < 0 or (key == "lr" and self.lr == 0):
                raise ConfigError(source, f"{prefix}{key}", f"= {getattr(self, key)}; expected > 0"
                                  if key == "lr" else f"= {self.weight_decay}; expected >= 0")
        if not 0 < self.val_percent < 100:
            raise ConfigError(source, f"{prefix}val_percent", f"= {self.val_percent}; expected 1..99")


# ---------------------------------------------------------------------------------------------------------------
def _task_targets(task: TaskConfig, labels: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """-> (targets, known mask). multiclass/binary: int64[n], bool[n]; multilabel: int64[n, L], bool[n, L]."""
    if task.kind == "multilabel":
        y = np.stack([labels[c] for c in task.columns], axis=1)
        return y, y != MISSING
    y = labels[task.columns[0]]
    return y, y != MISSING


class _Stats:
    """First pass: label checks and counts per task, and the validation and test rows (kept decoded; small)."""

    def __init__(self, tasks: Sequence[TaskConfig]):
        self.tasks = tasks
        self.counts: dict[str, np.ndarray] = {t.name: np.zeros(0, np.int64) for t in tasks}
        self.train_rows = {t.name: 0 for t in tasks}
        self.first_id: dict[tuple[str, int], str] = {}   # (column, value) -> a row id holding it, for messages
        self.val_parts: list[Chunk] = []
        self.test_parts: list[Chunk] = []
        self.rows = 0

    def add(self, chunk: Chunk) -> None:
        self.rows += len(chunk.ids)
        train = ~chunk.is_val & ~chunk.is_test
        for t in self.tasks:
            self._check(t, chunk)
            y, known = _task_targets(t, chunk.labels)
            if t.kind == "multilabel":
                pos = ((y == 1) & known)[train].sum(axis=0)
                neg = ((y == 0) & known)[train].sum(axis=0)
                c = np.stack([neg, pos])  # (2, L)
                self.counts[t.name] = c if self.counts[t.name].size == 0 else self.counts[t.name] + c
                self.train_rows[t.name] += int(known[train].any(axis=1).sum())
            else:
                vals = y[train & known]
                c = np.bincount(vals, minlength=len(self.counts[t.name]))
                old = self.counts[t.name]
                if len(old) < len(c):
                    old = np.pad(old, (0, len(c) - len(old)))
                self.counts[t.name] = old + c
                self.train_rows[t.name] += int(len(vals))
        if chunk.is_val.any():
            self.val_parts.append(chunk.rows(chunk.is_val))
        if chunk.is_test.any():  # type: ignore[union-attr]
            self.test_parts.append(chunk.rows(chunk.is_test))  # type: ignore[arg-type]

    def _check(self, task: TaskConfig, chunk: Chunk) -> None:
        """Every label value must be one of the task's classes (or -1/null); an error names column, value, row."""
        for col in task.columns:
            y = chunk.labels[col]
            check_label_values(task, col, y, chunk.ids)
            if task.kind == "multiclass":
                for v, i in first_ids(y, chunk.ids).items():
                    self.first_id.setdefault((col, v), str(i))

    def n_classes(self, task: TaskConfig) -> int:
        """Classes of a task (``heads.tasks.class_count``: no phantom class)."""
        col = task.columns[0]
        return class_count(task, {v: i for (c, v), i in self.first_id.items() if c == col})


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
        t = ~chunk.is_val & ~chunk.is_test
        if not t.any():
            continue
        buf.append(chunk.rows(t))
        n += int(t.sum())
        if n >= cfg.buffer_rows:
            yield from flush(buf)
            buf, n = [], 0
    if buf:
        yield from flush(buf)


def train_heads(source: ChunkSource, tasks: Sequence[TaskConfig], dim: int, cfg: TrainConfig = TrainConfig()
                ) -> list[FittedHead]:
    """Train one head per task from ``source`` (called once per epoch, plus once for label statistics)."""
    check_tasks(tasks, "train_heads")
    stats = _scan(source, tasks)
    val = Chunk.concat(stats.val_parts)
    heads, losses, opts, n_cls = _init_heads(tasks, stats, dim, cfg)
    best = _fit(source, tasks, heads, losses, opts, val, cfg)
    evaluation = (Chunk.concat(stats.test_parts), TEST) if stats.test_parts else (val, VALIDATION)
    return [_finish(t, heads[t.name], best[t.name], n_cls[t.name], stats, val, evaluation) for t in tasks]


def _scan(source: ChunkSource, tasks: Sequence[TaskConfig]) -> _Stats:
    """Step 1: one pass for label checks, class counts and the validation/test rows."""
    stats = _Stats(tasks)
    for chunk in source():
        stats.add(chunk)
    if not stats.val_parts:
        raise LabelError("no validation rows: add a 'validation' split or let the hash split choose some")
    for t in tasks:
        if stats.train_rows[t.name] == 0:
            raise LabelError(f"task {t.name!r} has no labelled training rows in columns {list(t.columns)}")
    return stats


def _init_heads(tasks: Sequence[TaskConfig], stats: _Stats, dim: int, cfg: TrainConfig):
    """Step 2: one head, loss and optimiser per task, each seeded from its name (same head alone or together)."""
    heads, losses, opts, n_cls = {}, {}, {}, {}
    for t in tasks:
        n_cls[t.name] = stats.n_classes(t)
        torch.manual_seed(cfg.seed * 1_000_003 + zlib.crc32(t.name.encode()))
        heads[t.name] = Head(dim, t.n_outputs(n_cls[t.name]), t.hidden if t.head == "mlp" else 0)
        losses[t.name] = _loss_fn(t, stats.counts[t.name], n_cls[t.name])
        opts[t.name] = torch.optim.AdamW(heads[t.name].parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return heads, losses, opts, n_cls


def _fit(source: ChunkSource, tasks: Sequence[TaskConfig], heads: dict, losses: dict, opts: dict, val: Chunk,
         cfg: TrainConfig) -> dict[str, tuple[float, dict, int]]:
    """Step 3: epochs of shared mini-batches; per head early stopping on validation loss -> best state per head."""
    best = {n: (float("inf"), copy.deepcopy(h.state_dict()), 0) for n, h in heads.items()}
    active = set(heads)
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
            if t.name in active:
                _early_stop(t, heads[t.name].eval(), losses[t.name], val, xv, best, active, epoch, cfg.patience)
    return best


def _early_stop(t: TaskConfig, h: Head, loss, val: Chunk, xv: torch.Tensor, best: dict, active: set,
                epoch: int, patience: int) -> None:
    """After an epoch: keep the state with the best validation loss; stop a head after ``patience`` worse ones."""
    y, known = _task_targets(t, val.labels)
    with torch.no_grad():
        total, count = loss(h(xv), torch.from_numpy(y), torch.from_numpy(known))
    vloss = float(total) / max(count, 1)
    best_loss, state, since = best[t.name]
    if vloss < best_loss - 1e-6:
        best[t.name] = (vloss, copy.deepcopy(h.state_dict()), 0)
    elif since + 1 >= patience:
        active.discard(t.name)
        logger.info("head %s stopped after epoch %d (best validation loss %.4f)", t.name, epoch + 1, best_loss)
    else:
        best[t.name] = (best_loss, state, since + 1)


def _finish(t: TaskConfig, h: Head, best: tuple[float, dict, int], n_classes: int, stats: _Stats, val: Chunk,
            evaluation: tuple[Chunk, str]) -> FittedHead:
    """Step 4: restore the best state, tune multi-label thresholds on validation, measure on the evaluation split."""
    h.load_state_dict(best[1])
    h.eval()
    head = FittedHead(t, h, _label_names(t, n_classes))
    if t.kind == "multilabel" and t.tune_thresholds:
        head.thresholds = tune_thresholds(head, val)
    data, split = evaluation
    metrics, _ = evaluate(head, data)
    metrics.update({"split": split, "train_rows": stats.train_rows[t.name], "validation_loss": best[0]})
    head.metrics = metrics
    return head


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)   # stored as these decimals; compared as float32


def tune_thresholds(head: FittedHead, val: Chunk) -> list[float]:
    """Per label, the probability threshold (grid 0.05..0.95) with the best F1 on validation; 0.5 if unseen.

    Candidates are scored with the decision rule itself (``threshold_rule``), so a tuned threshold means on
    validation exactly what it will mean in the predictions table.
    """
    z = head.logits(val.x)
    y, known = _task_targets(head.task, val.labels)
    out = []
    for j in range(z.shape[1]):
        t, zj = y[known[:, j], j], z[known[:, j], j]
        if not (t == 1).any():
            out.append(0.5)
            continue
        on, _ = threshold_rule(np.broadcast_to(zj[:, None], (len(zj), len(THRESHOLD_GRID))),
                               THRESHOLD_GRID.astype(np.float32))
        tp = (on & (t == 1)[:, None]).sum(0)
        f1 = 2 * tp / np.maximum(on.sum(0) + (t == 1).sum(), 1)
        out.append(float(THRESHOLD_GRID[int(np.argmax(f1))]))
    return out


def evaluate(head: FittedHead, data: Chunk) -> tuple[dict, np.ndarray]:
    """Metrics of ``head`` on ``data`` and the majority-class baseline on the same rows.

    Returns (metrics, the predicted classes the metrics were computed from): labels come from the head's decision
    rule, the one the predictions table uses.
    """
    task, labels = head.task, head.labels
    logits = head.logits(data.x)
    y, known = _task_targets(task, data.labels)
    pred = head.decide(logits).classes
    if task.kind == "multilabel":
        pred = pred.astype(np.int64)
        m = multilabel_metrics(y, pred, known, labels)
        if head.thresholds is not None:  # also show the untuned figures
            at_half = multilabel_metrics(y, head.decide(logits, [0.5] * len(labels)).classes.astype(np.int64),
                                         known, labels)
            m["macro_f1_at_0.5"], m["micro_f1_at_0.5"] = at_half["macro_f1"], at_half["micro_f1"]
        majority = np.array([np.bincount(y[known[:, j], j], minlength=2).argmax() if known[:, j].any() else 0
                             for j in range(y.shape[1])])
        base = multilabel_metrics(y, np.broadcast_to(majority, y.shape), known, labels)
        m["majority_macro_f1"], m["majority_micro_f1"] = base["macro_f1"], base["micro_f1"]
        return m, pred
    n = len(labels)
    m = single_label_metrics(y[known], pred[known], n)
    if task.kind == "multiclass":  # the training report draws it (rows true, columns predicted)
        m["confusion"] = confusion_counts(y[known], pred[known], n)
    if known.any():
        maj = np.bincount(y[known], minlength=n).argmax()
        base = single_label_metrics(y[known], np.full(int(known.sum()), maj), n)
        m["majority_accuracy"], m["majority_macro_f1"] = base["accuracy"], base["macro_f1"]
    return m, pred
