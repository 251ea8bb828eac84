"""The recipe of one multi-task tuning run (the ``training:`` section of conf/train_encoder.yaml)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from encoder.typed_config import ConfigError, require_at_least

BinaryMode = Literal["off", "ste", "ste_mixed"]
LossScaling = Literal["log_classes", "none"]
BINARY_MODES: tuple[str, ...] = get_args(BinaryMode)
LOSS_SCALINGS: tuple[str, ...] = get_args(LossScaling)


@dataclass(frozen=True)
class MultiTaskConfig:
    """Optimisation settings of one multi-task run (the ``training:`` section of conf/train_encoder.yaml)."""

    max_steps: int = 600                 # upper bound; early stopping usually ends sooner
    eval_every: int = 100                # steps between validation passes
    patience: int = 3                    # validation passes without a better score before stopping
    texts_per_step: int = 32             # examples per optimiser step, across tasks
    token_budget: int = 4096             # padded tokens per micro-batch; a step accumulates as many as it needs
    max_length: int = 128                # training truncation (the feature spec's max_length applies at inference)
    lr: float = 5e-5                     # AdamW on the transformer
    head_lr: float = 1e-3                # AdamW on the task heads
    weight_decay: float = 0.01
    warmup_steps: int = 30               # linear warm-up, then linear decay to 0 at max_steps
    temperature: float = 2.0             # task sampling: p ~ n ** (1/T)
    loss_scaling: LossScaling = "log_classes"
    # off | ste | ste_mixed: chosen by the transfer study on the tuning tasks' validation (ste_mixed 0.557 vs ste
    # 0.549 mean, docs/tuning.md)
    binary: BinaryMode = "ste_mixed"
    keep_general: float = 1.0            # weight of 1 - cos(features, base features); 0 turns it off
    bit_margin: float = 0.0              # weight of mean (|x - t| - 1)^2 on unit-RMS features; 0 turns it off
    distill_alpha: float = 0.5           # tasks with teacher logits: weight of the hard labels (rest: soft targets)
    distill_temperature: float = 2.0     # softens teacher and student alike (Hinton et al. 2015; loss x T²)
    val_rows: int = 1000                 # validation rows per task at most (the first by a hash of the id)
    seed: int = 0
    autocast: Literal["none", "fp16", "bf16"] = "bf16"   # GPU only; CPU trains in fp32

    def validate(self, source: str, prefix: str) -> None:
        require_at_least(self, ("max_steps", "eval_every", "patience", "texts_per_step", "token_budget", "val_rows"), 1,
                         source, prefix)
        if not 8 <= self.max_length <= 512:
            raise ConfigError(source, f"{prefix}max_length", f"= {self.max_length}; expected 8..512")
        if self.token_budget < self.max_length:
            raise ConfigError(source, f"{prefix}token_budget", f"= {self.token_budget}; expected >= max_length "
                              f"({self.max_length}), so one text of full length fits a micro-batch")
        if not 0 <= self.distill_alpha <= 1:
            raise ConfigError(source, f"{prefix}distill_alpha", f"= {self.distill_alpha}; expected 0..1")
        for key in ("lr", "head_lr", "temperature", "distill_temperature"):
            if not getattr(self, key) > 0:
                raise ConfigError(source, f"{prefix}{key}", f"= {getattr(self, key)}; expected > 0")
        require_at_least(self, ("weight_decay", "keep_general", "bit_margin", "warmup_steps"), 0, source, prefix)
