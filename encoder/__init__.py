"""Shared text encoder: pooled multi-layer features from a local transformer, quantized to compact codes.

A plain torch/numpy/pyarrow library: it never imports pyspark, so it runs and tests anywhere.
"""
from .spec import FeatureSpec, SpecMismatchError

__all__ = ["FeatureSpec", "SpecMismatchError"]

__version__ = "0.1.0"
