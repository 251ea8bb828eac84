"""Per-task models for the crossover: students cut from a teacher's lower layers, and a trained model's logits (a
teacher's soft targets)."""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from encoder.features import FeatureSettings

from .data import TaskData, TrainedEncoder
from .loop import token_ids
from .network import SharedEncoder


def first_layers(model: nn.Module, layers: int) -> nn.Module:
    """A copy of a BERT-style encoder keeping only its first ``layers`` transformer layers: a per-task student
    starts from the teacher's own lower layers (as DistilBERT starts from every other layer of BERT)."""
    n = int(model.config.num_hidden_layers)  # type: ignore[union-attr]
    if not 1 <= layers <= n:
        raise ValueError(f"layers = {layers}; this model has 1..{n}")
    student = copy.deepcopy(model)
    student.encoder.layer = student.encoder.layer[:layers]  # type: ignore[union-attr,index]
    student.config.num_hidden_layers = layers  # type: ignore[union-attr]
    return student


@torch.no_grad()
def task_logits(trained: TrainedEncoder, tokenizer: Any, settings: FeatureSettings, task: TaskData,
                texts: Sequence[str], max_length: int, binary: bool = False, budget: int = 8192) -> np.ndarray:
    """A trained model's logits float32[n, outputs] for ``texts`` on one of its tasks (e.g. a teacher's soft
    targets), through the same forward function and head input as training."""
    net = SharedEncoder(trained.model.eval(), settings, [task], 0)
    net.heads[task.task.name] = trained.heads[task.task.name]
    return net.logits(task.task.name, token_ids(tokenizer, texts, max_length), task.n_outputs,
                      tokenizer.pad_token_id or 0, binary, budget)
