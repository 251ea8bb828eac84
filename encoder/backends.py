"""The encoder backends (``encoder.backend``) and the int8 recipes, in a module without heavy imports: what a spec
records about a backend is decided here, what runs it is ``encoder/onnx_graph.py``.

- ``torch``: eager PyTorch (the default; what tuning trains and every existing spec was made with).
- ``onnx``: the same fp32 graph run by ONNX Runtime.
- ``onnx_int8``: that graph with int8 weights (the recipe ``ONNX_INT8`` names).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

Backend = Literal["torch", "onnx", "onnx_int8"]
BACKENDS: tuple[str, ...] = typing.get_args(Backend)
OPSET = 17


@dataclass(frozen=True)
class Int8Recipe:
    """How the fp32 graph becomes int8 (ONNX Runtime dynamic quantisation: int8 weights, activations quantised per
    batch at run time, so no calibration sample and the graph depends on the weights alone)."""

    per_channel: bool              # one scale per output channel of each weight matrix (else one per matrix)
    fp32_nodes: tuple[str, ...]    # regular expressions of MatMul node names kept in fp32 ({last}: the last layer)

    def describe(self) -> str:
        keep = ",".join(self.fp32_nodes) or "none"
        return f"ort-dynamic-qint8/{'per-channel' if self.per_channel else 'per-tensor'}/fp32:{keep}"


INT8_VARIANTS: dict[str, Int8Recipe] = {
    "per_tensor": Int8Recipe(per_channel=False, fp32_nodes=()),
    "per_channel": Int8Recipe(per_channel=True, fp32_nodes=()),
    "per_channel_fp32_ffn_out": Int8Recipe(per_channel=True, fp32_nodes=(r"layer\.\d+/output/dense/",)),
    "per_channel_fp32_last_layer": Int8Recipe(per_channel=True, fp32_nodes=(r"layer\.{last}/",)),
}
"""The int8 variants bench/int8_variants.py compares (docs/backends.md: speed, bits, accuracy on validation)."""

ONNX_INT8 = "per_tensor"
"""The variant ``encoder.backend: onnx_int8`` builds, chosen on the tuning tasks' validation splits
(bench/int8_variants.py; the held-out tasks took no part). A spec records its recipe, so changing it changes the
fingerprint of new onnx_int8 specs and refuses old ones."""


def backend_recipe(backend: str, variant: str | None = None) -> str:
    """What a spec records about a backend's graph: '' for torch, the recipe's description otherwise."""
    if backend == "torch":
        return ""
    if backend == "onnx":
        return f"onnx-fp32/opset{OPSET}"
    return INT8_VARIANTS[variant or ONNX_INT8].describe()
