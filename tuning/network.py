"""The network tuning trains: the transformer, the feature path of the spec (``encoder.forward``, the extractor's own
forward function) and one head per task."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from encoder.batching import padded_batches
from encoder.features import FeatureSettings
from encoder.forward import Autocast, pad_ids, pooled_features
from heads.modules import Head

from .data import TaskData


class SharedEncoder(nn.Module):
    """Transformer + the spec's pooling + one head per task. ``features`` is the extractor's forward function, so
    it gives float32[n, dim] exactly as the embed job computes them (up to dropout in training mode)."""

    def __init__(self, model: nn.Module, settings: FeatureSettings, tasks: Sequence[TaskData], seed: int,
                 thresholds: np.ndarray | None = None):
        super().__init__()
        self.model, self.settings = model, settings
        self.dim = settings.dim(int(model.config.hidden_size))  # type: ignore[union-attr]
        self.scale = math.sqrt(self.dim) if settings.normalize else 1.0    # heads/inputs.py: unit RMS per dimension
        g = torch.Generator().manual_seed(seed)
        heads = {}
        for t in tasks:
            h = Head(self.dim, t.n_outputs, t.task.hidden if t.task.head == "mlp" else 0)
            with torch.no_grad():             # seeded, independent of the order modules were built in
                for p in h.parameters():
                    p.copy_(torch.empty_like(p).uniform_(-1, 1, generator=g) / math.sqrt(p.shape[-1]))
            heads[t.task.name] = h
        self.heads = nn.ModuleDict(heads)
        self.register_buffer("thresholds", torch.zeros(self.dim) if thresholds is None
                             else torch.as_tensor(thresholds).float(), persistent=False)

    def features(self, ids: torch.Tensor, mask: torch.Tensor, autocast: Autocast = "none") -> torch.Tensor:
        """(ids, mask) int64[n, t] -> pooled float32[n, dim], with gradients when the caller allows them."""
        return pooled_features(self.model, ids, mask, self.settings, autocast)

    def head_input(self, z: torch.Tensor, binary: bool) -> torch.Tensor:
        """What a head sees. Binary: the stored code decoded (+1 where z > threshold, else -1) in the forward pass,
        with the identity gradient of the unit-RMS features in the backward pass (straight-through)."""
        x = z * self.scale
        if not binary:
            return x
        q = torch.where(z > self.thresholds, 1.0, -1.0).to(x.dtype)
        return q + (x - x.detach())     # exactly q forward (q + 0); x's gradient backward

    @torch.no_grad()
    def logits(self, task: str, rows: Sequence[Sequence[int]], n_outputs: int, pad_id: int, binary: bool,
               budget: int, autocast: Autocast = "none") -> np.ndarray:
        """One task's logits float32[n, outputs] for token id lists, in padded micro-batches under ``budget``
        (validation during tuning, a teacher's soft targets)."""
        lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
        out = np.zeros((len(rows), n_outputs), np.float32)
        device = next(self.model.parameters()).device
        for mb in padded_batches(lengths, budget):
            ids, mask = pad_ids([rows[j] for j in mb], pad_id, device)
            z = self.features(ids, mask, autocast)
            out[mb] = self.heads[task](self.head_input(z, binary)).float().cpu().numpy()
        return out

    def bit_margin_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Per text: mean over dimensions of (|x - t| - 1)^2 on the unit-RMS features, 0 when every dimension sits
        one RMS away from its threshold (where the sign loses least)."""
        return ((z.float() - self.thresholds).abs() * self.scale - 1).square().mean(1)


def load_trunk(model_path: str, device: str = "cpu") -> tuple[Any, Any]:
    """The transformer in training form (dropout on) and its tokenizer, through the one loader's rules."""
    from encoder.model import load_encoder

    loaded = load_encoder(model_path, device=device)
    return loaded.model.train(), loaded.tokenizer
