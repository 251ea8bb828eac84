"""Fused scoring: every head applied to a batch of packed codes in one pass.

Codes are decoded once; all first layers (linear heads' only layer, MLP heads' hidden layer) are stacked into one
weight matrix, so one matrix product serves every head. Results equal applying the heads one by one (up to float
summation order). For binary codes the +1/-1 decoding is folded into the weights: x.W + b = bits.(2W) + (b - sum W),
so the bits go straight from the bytes into the product (torch shifts, multi-threaded) in cache-sized chunks.
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
        self.bits = spec.quantization == "binary" and spec.dim == spec.n_bytes * 8
        if self.bits:                                    # fold x = 2*bits - 1 into the weights
            self.w01 = (2 * self.w).contiguous()
            self.b01 = self.b - self.w.sum(0)
            self._shifts = torch.arange(7, -1, -1, dtype=torch.uint8)

    CHUNK_ROWS = 8192  # measured best on 2 cores (bench/heads.py): the decoded chunk stays in cache

    def _first_layers(self, codes: np.ndarray) -> torch.Tensor:
        """uint8[n, n_bytes] -> float32[n, total]: every head's first layer at once."""
        if self.bits:
            c = torch.from_numpy(codes)
            x = ((c.unsqueeze(-1) >> self._shifts) & 1).reshape(c.shape[0], self.spec.dim).float()
            return torch.addmm(self.b01, x, self.w01)
        return torch.addmm(self.b, torch.from_numpy(decode_fast(codes, self.spec)), self.w)

    @torch.inference_mode()
    def logits(self, codes: np.ndarray) -> list[np.ndarray]:
        """uint8[n, n_bytes] -> per head logits float32[n, k]."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if not codes.flags.writeable:  # e.g. np.frombuffer over Arrow memory; torch wants writable arrays
            codes = codes.copy()
        parts: list[list[np.ndarray]] = [[] for _ in self.heads]
        for start in range(0, max(len(codes), 1), self.CHUNK_ROWS):
            z = self._first_layers(codes[start:start + self.CHUNK_ROWS])
            for i, (h, (s, e)) in enumerate(zip(self.heads, self.slices)):
                part = z[:, s:e]
                if h.module.hidden:
                    part = h.module.out(torch.relu(part))
                parts[i].append(part.numpy())
        return [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]


def score_one_by_one(heads: Sequence[TrainedHead], spec: FeatureSpec, codes: np.ndarray) -> list[np.ndarray]:
    """The reference: decode and apply each head separately (what fused scoring must equal)."""
    out = []
    for h in heads:
        with torch.inference_mode():
            out.append(h.module(torch.from_numpy(spec.decode(codes))).numpy())
    return out
