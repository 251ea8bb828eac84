"""Head networks: a linear layer (logistic/softmax regression) or one hidden layer (MLP)."""
from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """float[n, d] -> logits float[n, k]. ``hidden`` = 0 gives the linear head."""

    def __init__(self, dim: int, n_outputs: int, hidden: int = 0):
        super().__init__()
        self.dim, self.n_outputs, self.hidden = dim, n_outputs, hidden
        if hidden:
            self.first = nn.Linear(dim, hidden)
            self.out = nn.Linear(hidden, n_outputs)
        else:
            self.out = nn.Linear(dim, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hidden:
            x = torch.relu(self.first(x))
        return self.out(x)
