"""Fused scoring: every head applied to a batch of packed codes in one pass.

Codes are decoded once; all first layers (linear heads' only layer, MLP heads' hidden layer) are stacked into one
weight matrix, so one matrix product serves every head. Results equal applying the heads one by one (up to float
summation order). For binary codes the +1/-1 decoding is folded into the weights: x.W + b = bits.(2W) + (b - sum W),
so the bits go straight from the bytes into the product (torch shifts, multi-threaded) in cache-sized chunks.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from encoder.spec import FeatureSpec, require_same_spec

from .fitted import FittedHead
from .inputs import head_inputs


class FusedScorer:
    """All heads of one feature spec, stacked so a chunk of rows costs one product for every linear head and, when
    there are MLP heads, one for all their hidden layers and one block-diagonal product for all their outputs.

    Output columns: every linear head's logits first (in head order), then every MLP head's; ``out_slices[i]`` says
    where head i's are. Products write straight into the output array, so nothing is gathered or copied per head.
    """

    CHUNK_ROWS = 8192  # measured best on 2 cores (bench/heads.py): the decoded chunk stays in cache
    GEMM_ROWS = 256   # every matrix product's row count (CHUNK_ROWS is a multiple): scores independent of the batch
    # Binary codes with at most this many first-layer outputs in all are scored from per-byte tables: for byte
    # position j and byte value v, the sum of the folded weights of v's set bits, so a row costs n_bytes lookups
    # of a table row instead of d multiply-adds. Measured on 2 cores (100 outputs: 1.4M vs 0.9M rows/s; the
    # tables, n_bytes x 256 x outputs floats, fall out of cache past a few hundred outputs, where the product wins).
    LUT_MAX_OUTPUTS = 256

    def __init__(self, heads: Sequence[FittedHead], spec: FeatureSpec):
        for h in heads:
            if h.spec_fingerprint is not None:
                require_same_spec(spec.fingerprint, h.spec_fingerprint, f"head {h.task.name!r}")
            if h.module.dim != spec.dim:
                raise ValueError(f"head {h.task.name!r} expects {h.module.dim} features; the spec has {spec.dim}")
        self.heads, self.spec = list(heads), spec
        linear = [h for h in self.heads if not h.module.hidden]
        mlps = [h for h in self.heads if h.module.hidden]
        self.n_lin = sum(h.module.n_outputs for h in linear)
        self.n_out = self.n_lin + sum(h.module.n_outputs for h in mlps)
        slices, col = {}, 0
        for h in linear + mlps:
            slices[id(h)] = (col, col + h.module.n_outputs)
            col += h.module.n_outputs
        self.out_slices = [slices[id(h)] for h in self.heads]
        self.bits = spec.quantization == "binary" and spec.dim == spec.n_bytes * 8
        # byte value -> its 8 bits as floats, most significant first (the table's big-endian bit order): one gather
        # per byte unpacks a chunk ~3x faster than shifting and masking (bench/heads.py)
        self._bits = ((torch.arange(256)[:, None] >> torch.arange(7, -1, -1)) & 1).float()
        self.lin = self._stack([h.module.out for h in linear]) if linear else None
        self.hid = self._stack([h.module.first for h in mlps]) if mlps else None
        self.lut = self._byte_tables() if self.bits else None
        if mlps:  # every MLP output layer as one block-diagonal (hidden total x outputs total) matrix
            n_hid = sum(h.module.hidden for h in mlps)
            n_mo = self.n_out - self.n_lin
            self.w2, self.b2 = torch.zeros(n_hid, n_mo), torch.zeros(n_mo)
            r = c = 0
            for h in mlps:
                k, w = h.module.n_outputs, h.module.hidden
                self.w2[r:r + w, c:c + k] = h.module.out.weight.detach().float().T
                self.b2[c:c + k] = h.module.out.bias.detach().float()
                r, c = r + w, c + k
        # the same layers widened for batch-invariant products (``_addmm``)
        self._wide_lin = _widen(*self.lin) if self.lin is not None else None
        self._wide_hid = _widen(*self.hid) if self.hid is not None else None
        self._wide_out = _widen(self.w2, self.b2) if mlps else None

    def _stack(self, layers: list[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack first layers into (d, total) weights + bias; for bit inputs fold x = 2*bits - 1 into them:
        x.W + b = bits.(2W) + (b - sum W)."""
        w = torch.cat([lin.weight.detach().float() for lin in layers], 0).T.contiguous()
        b = torch.cat([lin.bias.detach().float() for lin in layers], 0)
        return ((2 * w).contiguous(), b - w.sum(0)) if self.bits else (w, b)

    def _byte_tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(n_bytes * 256, outputs) tables of every first layer (linear heads, then MLP hidden layers), their bias,
        and the per-position row offsets; None when there are too many outputs for the tables to pay."""
        parts = [p for p in (self.lin, self.hid) if p is not None]
        w = torch.cat([p[0] for p in parts], 1)           # (d, outputs), the bit fold already applied
        if w.shape[1] > self.LUT_MAX_OUTPUTS:
            return None
        b = torch.cat([p[1] for p in parts], 0)
        n_bytes = self.spec.n_bytes
        tables = torch.einsum("vb,jbk->jvk", self._bits, w.reshape(n_bytes, 8, -1))   # (n_bytes, 256, outputs)
        return tables.reshape(n_bytes * 256, -1).contiguous(), b, torch.arange(n_bytes) * 256

    def _first_layers(self, codes: np.ndarray) -> torch.Tensor:
        """Byte tables: uint8[c, n_bytes] -> every first layer's outputs float32[c, outputs]."""
        tables, bias, offsets = self.lut  # type: ignore[misc]
        idx = torch.from_numpy(codes).long() + offsets
        return torch.nn.functional.embedding_bag(idx, tables, mode="sum") + bias

    def _inputs(self, codes: np.ndarray) -> torch.Tensor:
        """uint8[n, n_bytes] -> float32[n, d]: bits (0/1, the weights absorb the sign map) or decoded values."""
        if self.bits:
            c = torch.from_numpy(codes).long()
            return torch.nn.functional.embedding(c, self._bits).reshape(c.shape[0], self.spec.dim)
        return torch.from_numpy(head_inputs(self.spec, codes))

    @torch.inference_mode()
    def logits_array(self, codes: np.ndarray) -> np.ndarray:
        """uint8[n, n_bytes] -> float32[n, total outputs]; head i owns columns ``out_slices[i]``.

        Every matrix product runs on exactly ``GEMM_ROWS`` rows (the last block zero-padded): BLAS results for a row
        can change with the number of rows in the call (measured: a 1-output layer differs in the last bit between
        a 9-row and a 300-row call), and a row's score must not depend on its batch, so that an incremental apply
        equals a full one. Lookup-table sums are per row already."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if not codes.flags.writeable:  # e.g. np.frombuffer over Arrow memory; torch wants writable arrays
            codes = codes.copy()
        n = len(codes)
        pad = (-n) % self.GEMM_ROWS
        if pad:
            codes = np.concatenate([codes, np.zeros((pad, codes.shape[1]), np.uint8)])
        out = torch.empty((len(codes), self.n_out), dtype=torch.float32)
        for start in range(0, len(codes), self.CHUNK_ROWS):
            chunk = codes[start:start + self.CHUNK_ROWS]
            rows = out[start:start + len(chunk)]
            if self.lut is not None:
                first = self._first_layers(chunk)
                rows[:, :self.n_lin] = first[:, :self.n_lin]
                if self.hid is not None:
                    rows[:, self.n_lin:] = _addmm(self._wide_out, torch.relu(first[:, self.n_lin:]))
                continue
            x = self._inputs(chunk)
            if self.lin is not None:
                rows[:, :self.n_lin] = _addmm(self._wide_lin, x)
            if self.hid is not None:
                hidden = torch.relu(_addmm(self._wide_hid, x))
                rows[:, self.n_lin:] = _addmm(self._wide_out, hidden)
        return out[:n].numpy()

    def logits(self, codes: np.ndarray) -> list[np.ndarray]:
        """uint8[n, n_bytes] -> per head logits float32[n, k] (views into one array)."""
        arr = self.logits_array(codes)
        return [arr[:, s:e] for s, e in self.out_slices]


def _widen(w: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(w, bias) with zero columns up to a multiple of 16 (at least 16), and the true width: a 6-column product gave
    a row different last bits at different positions in a block; 16+ columns did not."""
    n = w.shape[1]
    width = max(16, -(-n // 16) * 16)
    if width == n:
        return w, bias, n
    return (torch.cat([w, w.new_zeros(w.shape[0], width - n)], 1).contiguous(),
            torch.cat([bias, bias.new_zeros(width - n)]), n)


def _addmm(layer: tuple[torch.Tensor, torch.Tensor, int], x: torch.Tensor) -> torch.Tensor:
    """bias + x @ w for a widened layer, batch-invariant: calls of exactly ``FusedScorer.GEMM_ROWS`` rows (x's row
    count is a multiple of it), each block in a fresh allocator-aligned buffer."""
    w, bias, n = layer
    step = FusedScorer.GEMM_ROWS
    out = torch.cat([torch.addmm(bias, x[s:s + step].clone(), w) for s in range(0, len(x), step)])
    return out[:, :n] if out.shape[1] != n else out


def score_one_by_one(heads: Sequence[FittedHead], spec: FeatureSpec, codes: np.ndarray) -> list[np.ndarray]:
    """The reference: decode and apply each head separately (what fused scoring must equal)."""
    return [h.logits(head_inputs(spec, codes)) for h in heads]
