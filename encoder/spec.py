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
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import read_versioned_json
from .encoder_config import LongText
from .quantize import BITORDER, QUANTIZATIONS, THRESHOLD_MODES, code_bytes, dequantize, quantize

SPEC_FORMAT_VERSION = 2          # 2 added the long-text strategy; a 'truncate' spec is still written as version 1
READABLE_VERSIONS = (1, 2)
LONG_TEXTS: tuple[str, ...] = typing.get_args(LongText)
SPEC_JSON = "feature_spec.json"
SPEC_TENSORS = "feature_spec.safetensors"


class SpecMismatchError(ValueError):
    """Two artifacts were made with different feature specs and must not be mixed."""


FEATURES = {"part": "features"}   # decided by the model and the extractor: a table and an encoder must agree on these
CHUNKS = {"part": "features", "long_text": True}   # features that exist only under long_text = chunks
CODES = {"part": "codes"}         # decided by the quantizer
ARRAY = {"part": "array"}         # per-dimension arrays, stored in the safetensors file


@dataclass(frozen=True, eq=False)
class FeatureSpec:
    """What a stored embedding means. Arrays are float32[dim] or None.

    The JSON keys, the fingerprint and the extractor comparison are all derived from these fields (their metadata
    says which part each belongs to), so a new setting is added here once.
    """

    model: dict[str, str] = field(metadata=FEATURES)        # {"name", "sha256"} from encoder.model
    layers: tuple[int, ...] = field(metadata=FEATURES)      # hidden-state indices, 0 = embedding output
    layer_combine: str = field(metadata=FEATURES)           # concat | mean
    pooling: str = field(metadata=FEATURES)                 # cls | mean | max
    normalize: bool = field(metadata=FEATURES)
    max_length: int = field(metadata=FEATURES)              # tokens, special tokens included
    quantization: str = field(metadata=CODES)               # binary | int8 | fp16 | fp32
    threshold_mode: str = field(metadata=CODES)             # zero | calibrated (binary only; 'zero' otherwise)
    dim: int = field(metadata=FEATURES)                     # float feature width before quantization
    long_text: str = field(default="truncate", metadata=FEATURES)   # truncate | chunks (encoder/windows.py)
    chunk_tokens: int = field(default=0, metadata=CHUNKS)   # chunks: window length, special tokens included
    chunk_stride: int = field(default=0, metadata=CHUNKS)   # chunks: tokens between window starts
    max_chunks: int = field(default=0, metadata=CHUNKS)     # chunks: windows per text at most
    thresholds: np.ndarray | None = field(default=None, repr=False, metadata=ARRAY)
    scales: np.ndarray | None = field(default=None, repr=False, metadata=ARRAY)

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization = {self.quantization!r}; expected one of {QUANTIZATIONS}")
        if self.long_text not in LONG_TEXTS:
            raise ValueError(f"long_text = {self.long_text!r}; expected one of {LONG_TEXTS}")
        if self.long_text == "chunks" and min(self.chunk_tokens, self.chunk_stride, self.max_chunks) < 1:
            raise ValueError("a chunks spec needs chunk_tokens, chunk_stride and max_chunks >= 1")
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode = {self.threshold_mode!r}; expected one of {THRESHOLD_MODES}")
        if self.quantization == "binary" and self.threshold_mode == "calibrated" and self.thresholds is None:
            raise ValueError("a calibrated binary spec needs its thresholds")
        if self.quantization == "int8" and self.scales is None:
            raise ValueError("an int8 spec needs its per-dimension scales")
        for name in array_fields():
            arr = getattr(self, name)
            if arr is not None and (arr.shape != (self.dim,) or arr.dtype != np.float32):
                raise ValueError(f"{name} must be float32[{self.dim}], got {arr.dtype}{list(arr.shape)}")

    @property
    def n_bytes(self) -> int:
        """Bytes per row of the stored code."""
        return code_bytes(self.dim, self.quantization)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON part (no arrays): every non-array field, plus the format version and derived facts.

        A ``truncate`` spec is written exactly as format version 1 wrote it (no long-text keys), so its fingerprint
        and every table and head made with it stay valid.
        """
        chunks = self.long_text == "chunks"
        out: dict[str, Any] = {"format_version": SPEC_FORMAT_VERSION if chunks else 1}
        for f in _written_fields(chunks):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out | {"n_bytes": self.n_bytes, "bitorder": BITORDER,
                      "arrays": sorted(k for k in array_fields() if getattr(self, k) is not None)}

    def features(self) -> dict[str, Any]:
        """The part an extractor must reproduce (model, layers, pooling, ...), as JSON values."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in _written_fields(self.long_text == "chunks")
                if _part(f) == "features"}

    @property
    def fingerprint(self) -> str:
        """sha256 over the canonical JSON and the array bytes; changes when any part of the spec changes."""
        h = hashlib.sha256(json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":")).encode())
        for name in array_fields():
            arr = getattr(self, name)
            if arr is not None:
                h.update(name.encode() + b"\0" + np.ascontiguousarray(arr, dtype="<f4").tobytes())
        return h.hexdigest()

    def replace(self, **changes: Any) -> "FeatureSpec":
        return dataclasses.replace(self, **changes)

    def encoder_config(self, model: str, device: str = "cpu") -> Any:
        """The EncoderConfig that reproduces this spec's features with ``model`` (to encode queries the way the
        table was encoded; ``FeatureExtractor.check_spec`` still refuses a model that is not the spec's)."""
        from .encoder_config import EncoderConfig

        return EncoderConfig(model=model, layers=tuple(self.layers), layer_combine=self.layer_combine,  # type: ignore
                             pooling=self.pooling, normalize=self.normalize, max_length=self.max_length,  # type: ignore
                             long_text=self.long_text, chunk_tokens=self.chunk_tokens or 256,  # type: ignore
                             chunk_stride=self.chunk_stride or 224, max_chunks=self.max_chunks or 32,
                             device=device)  # type: ignore[arg-type]

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
        arrays = {k: getattr(self, k) for k in array_fields() if getattr(self, k) is not None}
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
        meta = read_versioned_json(json_path, READABLE_VERSIONS, "feature spec")
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
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if _part(f) == "array":
                kwargs[f.name] = arrays.get(f.name)
            elif f.name in meta:
                kwargs[f.name] = _from_json(hints[f.name], meta[f.name])
            elif f.default is dataclasses.MISSING:
                raise ValueError(f"feature spec has no {f.name!r}")
        return cls(**kwargs)

    def check_features(self, features: dict[str, Any], what: str) -> None:
        """Refuse when ``features`` (what an extractor computes) differ from this spec's feature part."""
        mine = self.features()
        diff = [k for k in sorted(mine.keys() | features.keys()) if mine.get(k) != features.get(k)]
        if diff:
            detail = "; ".join(f"{k}: spec {mine.get(k)!r}, {what} {features.get(k)!r}" for k in diff)
            raise SpecMismatchError(f"feature spec {self.fingerprint[:16]}… does not match {what} ({detail})")


def array_fields() -> tuple[str, ...]:
    """Names of the per-dimension arrays (stored in the safetensors file)."""
    return tuple(f.name for f in dataclasses.fields(FeatureSpec) if _part(f) == "array")


def _part(f: dataclasses.Field) -> str:
    return f.metadata.get("part", "")


def _written_fields(chunks: bool) -> list[dataclasses.Field]:
    """The fields a spec's JSON holds: all but the arrays, and the long-text ones only under chunks."""
    return [f for f in dataclasses.fields(FeatureSpec) if _part(f) != "array"
            and (chunks or (f.name != "long_text" and not f.metadata.get("long_text")))]


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, dict):
        return dict(sorted(v.items()))
    return v


def _from_json(tp: Any, v: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return tuple(v)
    if origin is dict:
        return dict(v)
    return {bool: bool, int: int, str: str}.get(tp, lambda x: x)(v)


def require_same_spec(expected: str, found: str, what: str) -> None:
    """Refuse to mix artifacts of different feature specs (the fingerprints differ)."""
    if expected != found:
        raise SpecMismatchError(f"{what} was made with feature spec {found[:16]}…, but {expected[:16]}… is "
                                "required; features from different specs are not comparable")
