"""What a head predicts: a task's kind, its label column(s) and the names of its labels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from encoder.config import ConfigError

TASK_KINDS: tuple[str, ...] = ("multiclass", "binary", "multilabel")
HEAD_KINDS: tuple[str, ...] = ("linear", "mlp")
MISSING = -1  # label value meaning "no label for this task on this row"

TaskKind = Literal["multiclass", "binary", "multilabel"]
HeadKind = Literal["linear", "mlp"]


@dataclass(frozen=True)
class TaskConfig:
    """One task to train a head for.

    multiclass/binary: ``columns`` holds one integer column (values 0..k-1, -1 or null = unlabelled);
    multilabel: one 0/1 column per label (one sigmoid each; -1 or null = that label unknown on that row).
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
        if self.kind != "multilabel" and len(self.columns) != 1:
            raise ConfigError(source, f"{prefix}columns", f"has {len(self.columns)} columns; a {self.kind} task "
                              "reads exactly one")
        if self.kind == "multilabel" and self.labels and len(self.labels) != len(self.columns):
            raise ConfigError(source, f"{prefix}labels", f"has {len(self.labels)} names for "
                              f"{len(self.columns)} columns")
        if self.kind == "binary" and self.labels and len(self.labels) != 2:
            raise ConfigError(source, f"{prefix}labels", f"has {len(self.labels)} names; binary needs 2")
        if self.hidden < 1:
            raise ConfigError(source, f"{prefix}hidden", f"= {self.hidden}; expected >= 1")

    def n_outputs(self, n_classes: int) -> int:
        """Logits the head produces: one per class (multiclass), one (binary), one per label (multilabel)."""
        if self.kind == "multiclass":
            return n_classes
        if self.kind == "binary":
            return 1
        return len(self.columns)
