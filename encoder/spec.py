"""The feature spec: everything that decides what bytes a text becomes, saved as a small versioned artifact.

A spec = model fingerprint + layers + pooling + layer combination + normalisation + max length + quantization +
thresholds/scales. It is saved as ``feature_spec.json`` (readable) plus ``feature_spec.safetensors`` (the per-dimension
arrays; safetensors metadata is text-only, so structure lives in the JSON). Its fingerprint is a sha256 over both, so
two tables or heads with the same fingerprint are comparable and anything else is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .quantize import QUANTIZATIONS, THRESHOLD_MODES, code_bytes, dequantize, quantize

SPEC_FORMAT_VERSION = 1
SPEC_JSON = "feature_spec.json"
SPEC_TENSORS = "feature_spec.safetensors"


class SpecMismatchError(ValueError):
    """Two artifacts were made with different feature specs and must not be mixed."""


@dataclass(frozen=True, eq=False)
class FeatureSpec:
    """What a stored embedding means. Arrays are float32[dim] or None."""

    model: dict[str, str]            # {"name", "sha256"} from encoder.model.model_fingerprint
    layers: tuple[int, ...]          # hidden-state indices, 0 = embedding output
    layer_combine: str               # concat | mean
    pooling: str                     # cls | mean | max
    normalize: bool
    max_length: int                  # tokens, special tokens included
    quantization: str                # binary | int8 | fp16 | fp32
    threshold_mode: str              # zero | calibrated (binary only; 'zero' otherwise)
    dim: int                         # float feature width before quantization
    thresholds: np.ndarray | None = field(default=None, repr=False)
    scales: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization = {self.quantization!r}; expected one of {QUANTIZATIONS}")
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode = {self.threshold_mode!r}; expected one of {THRESHOLD_MODES}")
        if self.quantization == "binary" and self.threshold_mode == "calibrated" and self.thresholds is None:
            raise ValueError("a calibrated binary spec needs its thresholds")
        if self.quantization == "int8" and self.scales is None:
            raise ValueError("an int8 spec needs its per-dimension scales")
        for name in ("thresholds", "scales"):
            arr = getattr(self, name)
            if arr is not None and (arr.shape != (self.dim,) or arr.dtype != np.float32):
                raise ValueError(f"{name} must be float32[{self.dim}], got {arr.dtype}{list(arr.shape)}")

    @property
    def n_bytes(self) -> int:
        """Bytes per row of the stored code."""
        return code_bytes(self.dim, self.quantization)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON part (no arrays) in a fixed key order."""
        return {
            "format_version": SPEC_FORMAT_VERSION,
            "model": dict(sorted(self.model.items())),
            "layers": list(self.layers),
            "layer_combine": self.layer_combine,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "quantization": self.quantization,
            "threshold_mode": self.threshold_mode,
            "dim": self.dim,
            "n_bytes": self.n_bytes,
            "bitorder": "big",
            "arrays": sorted(k for k in ("thresholds", "scales") if getattr(self, k) is not None),
        }

    @property
    def fingerprint(self) -> str:
        """sha256 over the canonical JSON and the array bytes; changes when any part of the spec changes."""
        h = hashlib.sha256(json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":")).encode())
        for name in ("thresholds", "scales"):
            arr = getattr(self, name)
            if arr is not None:
                h.update(name.encode() + b"\0" + np.ascontiguousarray(arr, dtype="<f4").tobytes())
        return h.hexdigest()

    def replace(self, **changes: Any) -> "FeatureSpec":
        return dataclasses.replace(self, **changes)

    # -- codes ------------------------------------------------------------------------------------------------
    def encode_features(self, x: np.ndarray) -> np.ndarray:
        """float32[n, dim] -> uint8[n, n_bytes] under this spec's quantization and thresholds."""
        if x.shape[1] != self.dim:
            raise ValueError(f"features have {x.shape[1]} dims; the spec says {self.dim}")
        return quantize(x, self.quantization, self.thresholds, self.scales)  # type: ignore[arg-type]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """uint8[n, n_bytes] -> float32[n, dim]: the stored codes as a head sees them."""
        if codes.ndim != 2 or codes.shape[1] != self.n_bytes:
            raise ValueError(f"codes have shape {codes.shape}; the spec says rows of {self.n_bytes} bytes")
        return dequantize(codes, self.dim, self.quantization, self.scales)  # type: ignore[arg-type]

    # -- artifact ---------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write feature_spec.json (+ feature_spec.safetensors when there are arrays) into ``folder``."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = self.to_json_dict() | {"fingerprint": self.fingerprint}
        arrays = {k: getattr(self, k) for k in ("thresholds", "scales") if getattr(self, k) is not None}
        if arrays:
            save_file(arrays, str(folder / SPEC_TENSORS), metadata={"fingerprint": self.fingerprint})
        (folder / SPEC_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return folder / SPEC_JSON

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSpec":
        """Read a spec from its folder or its JSON file and check the stored fingerprint."""
        from safetensors.numpy import load_file

        p = Path(path)
        json_path = p / SPEC_JSON if p.is_dir() else p
        if not json_path.is_file():
            raise FileNotFoundError(f"no feature spec at {json_path}")
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != SPEC_FORMAT_VERSION:
            raise ValueError(f"{json_path}: format_version = {meta.get('format_version')!r}; this code reads "
                             f"{SPEC_FORMAT_VERSION}")
        arrays: dict[str, np.ndarray] = {}
        if meta.get("arrays"):
            arrays = load_file(str(json_path.parent / SPEC_TENSORS))
        spec = cls.from_json_dict(meta, arrays)
        if meta.get("fingerprint") != spec.fingerprint:
            raise ValueError(f"{json_path}: stored fingerprint {meta.get('fingerprint')} does not match its "
                             f"contents ({spec.fingerprint}); the artifact was edited or is incomplete")
        return spec

    @classmethod
    def from_json_dict(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> "FeatureSpec":
        arrays = arrays or {}
        return cls(model=dict(meta["model"]), layers=tuple(meta["layers"]), layer_combine=meta["layer_combine"],
                   pooling=meta["pooling"], normalize=bool(meta["normalize"]), max_length=int(meta["max_length"]),
                   quantization=meta["quantization"], threshold_mode=meta["threshold_mode"], dim=int(meta["dim"]),
                   thresholds=arrays.get("thresholds"), scales=arrays.get("scales"))


def require_same_spec(expected: str, found: str, what: str) -> None:
    """Refuse to mix artifacts of different feature specs (the fingerprints differ)."""
    if expected != found:
        raise SpecMismatchError(f"{what} was made with feature spec {found[:16]}…, but {expected[:16]}… is "
                                "required; features from different specs are not comparable")
