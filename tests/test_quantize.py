import numpy as np
import pytest

from encoder.quantize import (QUANTIZATIONS, calibrate_thresholds, code_bytes, codes_from_column, dequantize,
                              pack_signs, quantize, unpack_signs)


def test_bit_order_is_big_endian_dimension_zero_first():
    x = np.array([[1.0, -1, -1, -1, -1, -1, -1, 1, 1, -1]], dtype=np.float32)  # 10 dims -> 2 bytes
    codes = pack_signs(x)
    assert codes.tolist() == [[0b10000001, 0b10000000]]


@pytest.mark.parametrize("dim", [8, 13, 384])
def test_unpack_inverts_pack(dim):
    x = np.random.default_rng(dim).normal(size=(50, dim)).astype(np.float32)
    codes = pack_signs(x)
    assert codes.shape == (50, code_bytes(dim, "binary"))
    np.testing.assert_array_equal(unpack_signs(codes, dim), np.where(x > 0, 1.0, -1.0))


def test_thresholds_shift_the_bits():
    x = np.array([[0.5, 0.5]], dtype=np.float32)
    assert unpack_signs(pack_signs(x, np.array([0.4, 0.6], np.float32)), 2).tolist() == [[1.0, -1.0]]


def test_calibrated_thresholds_balance_skewed_dimensions():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1001, 16)) + np.linspace(-3, 3, 16)).astype(np.float32)  # most dims all-one or all-zero at 0
    zero_bits = unpack_signs(pack_signs(x), 16) > 0
    cal_bits = unpack_signs(pack_signs(x, calibrate_thresholds(x)), 16) > 0
    assert np.abs(zero_bits.mean(axis=0) - 0.5).max() > 0.4
    assert np.abs(cal_bits.mean(axis=0) - 0.5).max() < 0.01


@pytest.mark.parametrize("q", QUANTIZATIONS)
def test_dequantize_inverts_quantize(q):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 24)).astype(np.float32)
    scales = np.abs(x).max(axis=0) / 127 if q == "int8" else None
    codes = quantize(x, q, scales=scales)
    assert codes.dtype == np.uint8 and codes.shape == (20, code_bytes(24, q))
    back = dequantize(codes, 24, q, scales=scales)
    tol = {"binary": None, "int8": scales / 2 + 1e-7 if scales is not None else None, "fp16": 2e-3, "fp32": 0.0}[q]
    if q == "binary":
        np.testing.assert_array_equal(back, np.where(x > 0, 1.0, -1.0))
    elif q == "int8":
        assert np.all(np.abs(back - x) <= tol[None, :])
    else:
        np.testing.assert_allclose(back, x, atol=tol, rtol=1e-3 if q == "fp16" else 0)


def test_codes_from_column_rejects_wrong_length():
    with pytest.raises(ValueError, match="row 1 has 2 bytes"):
        codes_from_column([b"abc", b"ab"], 3)
    np.testing.assert_array_equal(codes_from_column([b"\x01\x02", b"\x03\x04"], 2), [[1, 2], [3, 4]])
