"""Fused scoring: every head applied to a batch of packed codes in one pass.

Codes are decoded once; all first layers (linear heads' only layer, MLP heads' hidden layer) are stacked into one
weight matrix, so one matrix product serves every head. Results equal applying the heads one by one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from encoder.spec import FeatureSpec, require_same_spec

from .train import TrainedHead

# float32 lookup: byte value -> its 8 bits as +1/-1, most significant bit first (the quantizer's 'big' bit order)
_SIGN_LUT = (np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32) * 2 - 1)


def decode_fast(codes: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Same result as ``spec.decode`` (tested); binary codes go through a byte lookup table in one pass."""
    if spec.quantization == "binary" and spec.dim == codes.shape[1] * 8:
        return _SIGN_LUT[codes].reshape(codes.shape[0], spec.dim)
    return spec.decode(codes)


@dataclass
class Scores:
    """Per task, in the heads' order: logits float32[n, k]."""

    logits: list[np.ndarray]


class FusedScorer:
    """All heads of one feature spec, stacked for a single matrix product per batch."""

    def __init__(self, heads: Sequence[TrainedHead], spec: FeatureSpec):
        for h in heads:
            fp = getattr(h, "spec_fingerprint", spec.fingerprint)
            require_same_spec(spec.fingerprint, fp, f"head {h.task.name!r}")
            if h.module.dim != spec.dim:
                raise ValueError(f"head {h.task.name!r} expects {h.module.dim} features; the spec has {spec.dim}")
        self.heads, self.spec = list(heads), spec
        weights, biases, self.slices = [], [], []
        start = 0
        for h in self.heads:
            first = h.module.first if h.module.hidden else h.module.out
            weights.append(first.weight.detach().float())
            biases.append(first.bias.detach().float())
            self.slices.append((start, start + first.weight.shape[0]))
            start += first.weight.shape[0]
        self.w = torch.cat(weights, 0).T.contiguous()    # (d, total)
        self.b = torch.cat(biases, 0)                    # (total,)

    @torch.inference_mode()
    def logits(self, codes: np.ndarray) -> list[np.ndarray]:
        """uint8[n, n_bytes] -> per head logits float32[n, k]."""
        x = torch.from_numpy(decode_fast(codes, self.spec))
        z = torch.addmm(self.b, x, self.w)               # (n, total): every head's first layer at once
        out = []
        for h, (s, e) in zip(self.heads, self.slices):
            part = z[:, s:e]
            if h.module.hidden:
                part = h.module.out(torch.relu(part))
            out.append(part.numpy())
        return out


def score_one_by_one(heads: Sequence[TrainedHead], spec: FeatureSpec, codes: np.ndarray) -> list[np.ndarray]:
    """The reference: decode and apply each head separately (what fused scoring must equal)."""
    out = []
    for h in heads:
        with torch.inference_mode():
            out.append(h.module(torch.from_numpy(spec.decode(codes))).numpy())
    return out
