"""What a head predicts: a task's kind, its label column(s) and the names of its labels."""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence, get_args

import numpy as np

from encoder.typed_config import ConfigError, require_at_least

MISSING = -1  # label value meaning "no label for this task on this row"

TaskKind = Literal["multiclass", "binary", "multilabel"]
HeadKind = Literal["linear", "mlp"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)
HEAD_KINDS: tuple[str, ...] = get_args(HeadKind)


class LabelError(ValueError):
    """The label data does not fit the task (a value outside its classes, no labelled rows, a missing column)."""


@dataclass(frozen=True)
class TaskConfig:
    """One task to train a head for.

    multiclass/binary: ``columns`` holds one integer column (values 0..k-1, -1 or null = unlabelled);
    multilabel: one 0/1 column per label (one sigmoid each; -1 or null = that label unknown on that row).
    A column may be a glob (``topics__*``): it stands for every matching column of the label table, in table order.
    """

    name: str
    kind: TaskKind
    columns: tuple[str, ...]
    labels: tuple[str, ...] = ()          # label names; default: the column names (multilabel) or "0".."k-1"
    head: HeadKind = "linear"             # linear = logistic/softmax regression, the standard frozen-feature probe
    hidden: int = 256                     # mlp only: width of the one hidden layer
    class_weights: bool = False           # weight classes by inverse frequency (rare classes count more)
    # multilabel: choose each label's decision threshold to maximise its F1 on validation (else 0.5). Rare labels
    # (most GoEmotions emotions) are otherwise almost never predicted.
    tune_thresholds: bool = True

    def validate(self, source: str, prefix: str) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(source, f"{prefix}name", f"= {self.name!r}; use letters, digits, '_' and '-' "
                              "(it names a folder and columns)")
        if not self.columns:
            raise ConfigError(source, f"{prefix}columns", "is empty; name the label column(s)")
        if self.kind != "multilabel" and (len(self.columns) != 1 or is_glob(self.columns[0])):
            raise ConfigError(source, f"{prefix}columns", f"= {list(self.columns)}; a {self.kind} task reads "
                              "exactly one column (globs are for multilabel tasks)")
        if self.kind == "multilabel" and self.labels and len(self.labels) != len(self.columns) \
                and not any(map(is_glob, self.columns)):
            raise ConfigError(source, f"{prefix}labels", f"has {len(self.labels)} names for "
                              f"{len(self.columns)} columns")
        if self.kind == "binary" and self.labels and len(self.labels) != 2:
            raise ConfigError(source, f"{prefix}labels", f"has {len(self.labels)} names; binary needs 2")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(source, f"{prefix}labels", f"= {list(self.labels)} names a label twice")
        require_at_least(self, ("hidden",), 1, source, prefix)

    def n_outputs(self, n_classes: int) -> int:
        """Logits the head produces: one per class (multiclass), one (binary), one per label (multilabel)."""
        if self.kind == "multiclass":
            return n_classes
        if self.kind == "binary":
            return 1
        return len(self.columns)


def check_tasks(tasks: Sequence[TaskConfig], source: str, key: str = "tasks") -> None:
    """The one check of a task list: at least one task, and each name once (a name is a folder and columns)."""
    if not tasks:
        raise ConfigError(source, key, "is empty; configure at least one task")
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(source, key, f"names {dup} more than once; task names must be unique")


def check_label_values(task: TaskConfig, column: str, y: np.ndarray, ids: Sequence) -> None:
    """The one label check: every value of ``column`` is one of ``task``'s classes (multiclass: 0..k-1, below the
    number of label names when they are given; binary and multilabel: 0 or 1) or -1 for none. A LabelError names
    the column, the value and a row id holding it."""
    if task.kind == "multiclass":
        top = len(task.labels) if task.labels else None
        bad = (y < MISSING) | ((y >= top) if top is not None else False)
        allowed = f"0..{top - 1} ({top} label names)" if top else "0..k-1"
    else:
        bad = (y != MISSING) & (y != 0) & (y != 1)
        allowed = "0 or 1"
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise LabelError(f"task {task.name!r}: column {column!r} holds {int(y[i])} (row id {ids[i]!r}); "
                         f"expected {allowed}, or -1/null for no label")


def class_count(task: TaskConfig, seen: Mapping[int, object]) -> int:
    """The number of classes of ``task``; ``seen`` maps each class value found in its column to a row id holding
    it. Multiclass without label names is 0..max seen, which must all occur: a class with no example would be a
    phantom class (an output no row teaches), so a gap is a LabelError naming it."""
    if task.kind == "binary":
        return 2
    if task.kind == "multilabel":
        return len(task.columns)
    if task.labels:
        return len(task.labels)
    values = sorted(seen)
    n = values[-1] + 1 if values else 0
    gaps = sorted(set(range(n)) - set(values))
    if gaps:
        top = values[-1]
        raise LabelError(f"task {task.name!r}: column {task.columns[0]!r} holds {top} (row id {seen[top]!r}) but "
                         f"never {gaps[:5]}; a class with no example would be a phantom class. Fix the value, or "
                         "name the task's labels to declare all of its classes")
    return n


def first_ids(y: np.ndarray, ids: Sequence) -> dict[int, object]:
    """Each label value >= 0 of a column -> the id of the first row holding it (for ``class_count``)."""
    values, first = np.unique(y, return_index=True)
    return {int(v): ids[int(i)] for v, i in zip(values, first) if v >= 0}


def is_glob(column: str) -> bool:
    return any(c in column for c in "*?[")


def resolve_columns(task: TaskConfig, available: Sequence[str], where: str) -> TaskConfig:
    """The task with its globs expanded against ``available`` (the label table's columns, in table order).

    An unknown column or a glob that matches nothing is a LabelError listing the closest column names, not all of
    them (a label table may hold hundreds).
    """
    out: list[str] = []
    for col in task.columns:
        if is_glob(col):
            hits = [c for c in available if fnmatch.fnmatchcase(c, col)]
        else:
            hits = [col] if col in available else []
        if not hits:
            close = difflib.get_close_matches(col.replace("*", ""), list(available), n=5, cutoff=0.5)
            hint = f"closest: {', '.join(close)}" if close else f"it has {len(available)} columns, none close"
            raise LabelError(f"task {task.name!r}: {where} has no column matching {col!r} ({hint})")
        out += [c for c in hits if c not in out]
    resolved = dataclasses.replace(task, columns=tuple(out))
    if task.kind == "multilabel" and task.labels and len(task.labels) != len(out):
        raise LabelError(f"task {task.name!r}: {len(task.labels)} label names for {len(out)} columns {out[:5]}…")
    return resolved
