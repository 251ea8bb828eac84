"""Counted compute of a BERT-style encoder pass and of task heads, from the architecture and the token counts.

Only the matrix products are counted (2 FLOPs per multiply-add), as is usual for transformers: per layer and text of
t tokens, hidden size h, feed-forward size i:
    Q, K, V and output projections   4 x 2·t·h²
    attention scores and context     2 x 2·t²·h
    feed-forward in and out          2 x 2·t·h·i
Embedding lookups, layer norms, softmax, GELU and pooling are a few percent at these sizes and left out (tested
against torch's own FLOP counter on a real forward pass).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Architecture:
    """What the FLOP count of an encoder pass depends on."""

    layers: int
    hidden: int
    intermediate: int

    @classmethod
    def of(cls, config: Any, layers: int | None = None) -> "Architecture":
        """From a transformers config (``layers`` overrides the layer count: a student keeping the first k)."""
        return cls(int(layers if layers is not None else config.num_hidden_layers), int(config.hidden_size),
                   int(config.intermediate_size))


def encoder_flops(arch: Architecture, tokens: int | np.ndarray) -> float:
    """FLOPs of one encoder pass over texts of ``tokens`` tokens each (special tokens included), summed."""
    t = np.asarray(tokens, dtype=np.float64)
    h, i = float(arch.hidden), float(arch.intermediate)
    per_layer = 8.0 * t * h * h + 4.0 * t * t * h + 4.0 * t * h * i
    return float(arch.layers * per_layer.sum())


def head_flops(dim: int, n_outputs: int, hidden: int = 0) -> float:
    """FLOPs of one head on one text: a linear layer, or one hidden layer then the output layer."""
    if hidden:
        return 2.0 * dim * hidden + 2.0 * hidden * n_outputs
    return 2.0 * dim * n_outputs
