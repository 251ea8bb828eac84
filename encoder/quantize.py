"""The one quantizer: float features <-> stored codes, each precision with its exact inverse for heads.

``binary`` keeps one bit per dimension (x > threshold), packed 8 to a byte with ``np.packbits`` big-endian bit
order: dimension 0 is the most significant bit of byte 0. The paper reports this 16x reduction against fp16 costs
little accuracy. Decoding gives +1/-1, which is what heads are trained on.
"""
from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import pyarrow as pa

Quantization = Literal["binary", "int8", "fp16", "fp32"]
ThresholdMode = Literal["zero", "calibrated"]
RescoreMode = Literal["none", "int8"]    # the optional rescoring column beside a binary code (``output.rescore``)

QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
THRESHOLD_MODES: tuple[str, ...] = get_args(ThresholdMode)
RESCORE_MODES: tuple[str, ...] = get_args(RescoreMode)
BITORDER = "big"


def code_bytes(dim: int, quantization: Quantization) -> int:
    """Bytes per row of the stored code."""
    if quantization == "binary":
        return (dim + 7) // 8
    return dim * {"int8": 1, "fp16": 2, "fp32": 4}[quantization]


def pack_signs(x: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """float[n, d] -> uint8[n, ceil(d/8)]: bit i is 1 where x[:, i] > thresholds[i] (0 when none)."""
    bits = x > (0.0 if thresholds is None else thresholds[None, :])
    return np.packbits(bits, axis=1, bitorder=BITORDER)


def unpack_signs(codes: np.ndarray, dim: int) -> np.ndarray:
    """uint8[n, ceil(d/8)] -> float32[n, d] of +1/-1 (the exact inverse of ``pack_signs`` up to the sign)."""
    bits = np.unpackbits(codes, axis=1, count=dim, bitorder=BITORDER)
    return bits.astype(np.float32) * 2.0 - 1.0


def calibrate_thresholds(x: np.ndarray) -> np.ndarray:
    """Per-dimension median of a calibration sample float[n, d] -> float32[d]: each bit is then ~50% ones."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"calibration needs a non-empty float[n, d] sample, got shape {x.shape}")
    return np.median(x, axis=0).astype(np.float32)


def calibrate_scales(x: np.ndarray) -> np.ndarray:
    """Per-dimension int8 scale from a sample float[n, d] -> float32[d]: max |x| maps to 127 (values beyond clip)."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"calibration needs a non-empty float[n, d] sample, got shape {x.shape}")
    return np.maximum(np.abs(x).max(axis=0) / 127.0, 1e-12).astype(np.float32)


def quantize(x: np.ndarray, quantization: Quantization, thresholds: np.ndarray | None = None,
             scales: np.ndarray | None = None) -> np.ndarray:
    """float[n, d] -> uint8[n, code_bytes]: one row of bytes per input row, ready to store as a binary column."""
    x = np.asarray(x, dtype=np.float32)
    if quantization == "binary":
        return pack_signs(x, thresholds)
    if quantization == "int8":
        if scales is None:
            raise ValueError("int8 quantization needs per-dimension scales (calibrate_scales)")
        q = np.clip(np.rint(x / scales[None, :]), -127, 127).astype(np.int8)
        return q.view(np.uint8)
    if quantization == "fp16":
        return np.ascontiguousarray(x.astype("<f2")).view(np.uint8)
    if quantization == "fp32":
        return np.ascontiguousarray(x.astype("<f4")).view(np.uint8)
    raise ValueError(f"quantization = {quantization!r}; expected one of {', '.join(map(repr, QUANTIZATIONS))}")


def dequantize(codes: np.ndarray, dim: int, quantization: Quantization, scales: np.ndarray | None = None
               ) -> np.ndarray:
    """uint8[n, code_bytes] -> float32[n, d]: what a head sees (binary gives +1/-1)."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if quantization == "binary":
        return unpack_signs(codes, dim)
    if quantization == "int8":
        if scales is None:
            raise ValueError("int8 codes need their per-dimension scales to decode")
        return codes.view(np.int8).astype(np.float32) * scales[None, :]
    if quantization == "fp16":
        return codes.view("<f2").astype(np.float32)
    if quantization == "fp32":
        return codes.view("<f4").astype(np.float32, copy=True)
    raise ValueError(f"quantization = {quantization!r}; expected one of {', '.join(map(repr, QUANTIZATIONS))}")


def codes_to_column(codes: np.ndarray) -> pa.Array:
    """uint8[n, w] -> a binary Arrow column of n rows of w bytes, zero-copy from the array's buffer (the inverse of
    ``codes_from_column``; also what block keys and any fixed-width bytes become)."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n, width = codes.shape
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * width).tobytes())
    return pa.Array.from_buffers(pa.binary(), n, [None, offsets, pa.py_buffer(codes.tobytes())])


def codes_from_column(values: pa.Array | pa.ChunkedArray | list[bytes], n_bytes: int) -> np.ndarray:
    """A binary Arrow column (or a list of bytes) -> uint8[n, n_bytes]; a row of the wrong length is an error.

    An Arrow array is read zero-copy from its buffers when every row has ``n_bytes`` bytes (no Python object per
    row): the stored table is read at memory speed. Nulls are an error, since every embedding row has a code.
    """
    if isinstance(values, pa.ChunkedArray):
        parts = [codes_from_column(c, n_bytes) for c in values.chunks]
        return np.concatenate(parts) if parts else np.zeros((0, n_bytes), np.uint8)
    if isinstance(values, pa.Array):
        return _codes_from_arrow(values, n_bytes)
    n = len(values)
    buf = b"".join(values)
    if len(buf) != n * n_bytes:
        bad = next((i for i, v in enumerate(values) if len(v) != n_bytes), None)
        raise ValueError(f"embedding row {bad} has {len(values[bad]) if bad is not None else '?'} bytes; "
                         f"the feature spec says {n_bytes}")
    return np.frombuffer(buf, dtype=np.uint8).reshape(n, n_bytes)


def _codes_from_arrow(arr: pa.Array, n_bytes: int) -> np.ndarray:
    n = len(arr)
    if arr.null_count:
        raise ValueError(f"embedding column has {arr.null_count} null rows; every row needs a code")
    if pa.types.is_fixed_size_binary(arr.type):
        if arr.type.byte_width != n_bytes:
            raise ValueError(f"embedding rows have {arr.type.byte_width} bytes; the feature spec says {n_bytes}")
        data = arr.buffers()[1]
        return np.frombuffer(data, np.uint8, n * n_bytes, arr.offset * n_bytes).reshape(n, n_bytes)
    if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        raise ValueError(f"embedding column has type {arr.type}; expected binary")
    off_type = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], off_type, n + 1, arr.offset * np.dtype(off_type).itemsize)  # bytes
    lengths = np.diff(offsets)
    if n and (lengths != n_bytes).any():
        bad = int(np.flatnonzero(lengths != n_bytes)[0])
        raise ValueError(f"embedding row {bad} has {int(lengths[bad])} bytes; the feature spec says {n_bytes}")
    if n == 0:
        return np.zeros((0, n_bytes), np.uint8)
    return np.frombuffer(arr.buffers()[2], np.uint8, n * n_bytes, int(offsets[0])).reshape(n, n_bytes)
