"""Cheap task heads trained and applied on stored embedding codes. A plain torch/numpy library: no pyspark."""

__version__ = "0.1.0"
