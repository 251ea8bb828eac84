"""The feature spec: everything that decides what bytes a text becomes, saved as a small versioned artifact.

A spec = model fingerprint + layers + pooling + layer combination + normalisation + max length + quantization +
thresholds/scales (+ the optional int8 rescoring column and its scales). It is saved as ``feature_spec.json`` (readable) plus ``feature_spec.safetensors`` (the per-dimension
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

from .artifacts import read_versioned_json
from .features import FeatureSettings
from .quantize import BITORDER, QUANTIZATIONS, RESCORE_MODES, THRESHOLD_MODES, code_bytes, dequantize, quantize

SPEC_FORMAT_VERSION = 2          # 2 added the long-text strategy; a 'truncate' spec is still written as version 1
READABLE_VERSIONS = (1, 2)
SPEC_JSON = "feature_spec.json"
SPEC_TENSORS = "feature_spec.safetensors"


class SpecMismatchError(ValueError):
    """Two artifacts were made with different feature specs and must not be mixed."""


@dataclass(frozen=True, eq=False)
class FeatureSpec:
    """What a stored embedding means: the model, the feature settings (layers resolved to hidden-state indices), the
    feature width and the code. Arrays are float32[dim] or None (stored in the safetensors file).

    The JSON is flat (the settings' keys beside the code's), exactly as format versions 1 and 2 wrote it, so every
    existing spec keeps its fingerprint.
    """

    model: dict[str, str]                   # {"name", "sha256"} from encoder.model
    features: FeatureSettings               # layers as hidden-state indices (0 = the embedding output)
    dim: int                                # float feature width before quantization
    quantization: str                       # binary | int8 | fp16 | fp32
    threshold_mode: str = "zero"            # zero | calibrated (binary only; 'zero' otherwise)
    thresholds: np.ndarray | None = field(default=None, repr=False)
    scales: np.ndarray | None = field(default=None, repr=False)
    # The optional rescoring column (``output.rescore``): the same feature quantised to int8 with its own
    # per-dimension scales, stored beside a binary code so search can re-rank binary candidates by cosine.
    rescore: str = "none"                   # none | int8
    rescore_scales: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.features.layers, str):
            raise ValueError("a spec's layers are hidden-state indices (FeatureSettings.resolve)")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization = {self.quantization!r}; expected one of {QUANTIZATIONS}")
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode = {self.threshold_mode!r}; expected one of {THRESHOLD_MODES}")
        if self.quantization == "binary" and self.threshold_mode == "calibrated" and self.thresholds is None:
            raise ValueError("a calibrated binary spec needs its thresholds")
        if self.quantization == "int8" and self.scales is None:
            raise ValueError("an int8 spec needs its per-dimension scales")
        if self.rescore not in RESCORE_MODES:
            raise ValueError(f"rescore = {self.rescore!r}; expected one of {RESCORE_MODES}")
        if self.rescore != "none" and self.quantization != "binary":
            raise ValueError(f"a rescoring column re-ranks binary candidates; this spec's codes are {self.quantization}")
        if (self.rescore == "int8") != (self.rescore_scales is not None):
            raise ValueError("an int8 rescoring column needs its per-dimension scales (rescore_scales), and only it")
        for name in ARRAYS:
            arr = getattr(self, name)
            if arr is not None and (arr.shape != (self.dim,) or arr.dtype != np.float32):
                raise ValueError(f"{name} must be float32[{self.dim}], got {arr.dtype}{list(arr.shape)}")

    @property
    def n_bytes(self) -> int:
        """Bytes per row of the stored code."""
        return code_bytes(self.dim, self.quantization)

    @property
    def rescore_bytes(self) -> int:
        """Bytes per row of the rescoring column (0 without one)."""
        return 0 if self.rescore == "none" else code_bytes(self.dim, self.rescore)  # type: ignore[arg-type]

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON part (no arrays): the feature part, the code settings, the format version and derived facts.

        A ``truncate`` spec is written exactly as format version 1 wrote it (no long-text keys), and a spec without a
        rescoring column has no rescore keys, so its fingerprint and every table and head made with it stay valid.
        """
        out: dict[str, Any] = {"format_version": SPEC_FORMAT_VERSION if self.features.chunks else 1}
        rescore = {} if self.rescore == "none" else {"rescore": self.rescore, "rescore_bytes": self.rescore_bytes}
        return out | self.feature_part() | {
            "quantization": self.quantization, "threshold_mode": self.threshold_mode, "n_bytes": self.n_bytes,
            "bitorder": BITORDER, "arrays": sorted(k for k in ARRAYS if getattr(self, k) is not None)} | rescore

    def code_part(self) -> dict[str, Any]:
        """The settings that decide how the features become stored bytes (``CODE_FIELDS``), as JSON values."""
        return {k: getattr(self, k) for k in CODE_FIELDS}

    def differences(self, other: "FeatureSpec") -> list[str]:
        """The settings in which ``other`` differs from this spec (feature part, code part, arrays), by name."""
        mine, theirs = self.feature_part() | self.code_part(), other.feature_part() | other.code_part()
        out = [k for k in sorted(mine.keys() | theirs.keys()) if mine.get(k) != theirs.get(k)]
        for name in ARRAYS:
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                out.append(name)
        return out

    def feature_part(self) -> dict[str, Any]:
        """The part an extractor must reproduce (model, settings, width), as JSON values."""
        return feature_part(self.model, self.features, self.dim)

    @property
    def fingerprint(self) -> str:
        """sha256 over the canonical JSON and the array bytes; changes when any part of the spec changes."""
        h = hashlib.sha256(json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":")).encode())
        for name in ARRAYS:
            arr = getattr(self, name)
            if arr is not None:
                h.update(name.encode() + b"\0" + np.ascontiguousarray(arr, dtype="<f4").tobytes())
        return h.hexdigest()

    @classmethod
    def of(cls, model: dict[str, str], dim: int, quantization: str, threshold_mode: str = "zero",
           thresholds: np.ndarray | None = None, scales: np.ndarray | None = None, rescore: str = "none",
           rescore_scales: np.ndarray | None = None, **settings: Any) -> "FeatureSpec":
        """A spec from keyword settings in the JSON's flat shape (``layers=(6,), pooling="mean", ...``)."""
        return cls(model=model, features=FeatureSettings(**settings), dim=dim, quantization=quantization,
                   threshold_mode=threshold_mode, thresholds=thresholds, scales=scales, rescore=rescore,
                   rescore_scales=rescore_scales)

    def replace(self, **changes: Any) -> "FeatureSpec":
        """A copy with some fields changed; feature settings may be named directly (``replace(pooling="cls")``)."""
        names = {f.name for f in dataclasses.fields(FeatureSettings)}
        settings = {k: changes.pop(k) for k in list(changes) if k in names}
        if settings:
            changes["features"] = dataclasses.replace(changes.get("features", self.features), **settings)
        return dataclasses.replace(self, **changes)

    def encoder_config(self, model: str, device: str = "cpu") -> Any:
        """The EncoderConfig that reproduces this spec's features with ``model`` (to encode queries the way the
        table was encoded; ``FeatureExtractor.check_spec`` still refuses a model that is not the spec's)."""
        from .encoder_config import EncoderConfig

        return EncoderConfig(model=model, features=self.features, device=device)  # type: ignore[arg-type]

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

    def encode_rescore(self, x: np.ndarray) -> np.ndarray:
        """float32[n, dim] -> uint8[n, rescore_bytes]: the rescoring column's bytes (the one quantizer's int8 path,
        with this spec's rescore scales)."""
        if self.rescore == "none":
            raise ValueError("this feature spec has no rescoring column (embed with output.rescore=int8)")
        if x.shape[1] != self.dim:
            raise ValueError(f"features have {x.shape[1]} dims; the spec says {self.dim}")
        return quantize(x, self.rescore, scales=self.rescore_scales)  # type: ignore[arg-type]

    def decode_rescore(self, codes: np.ndarray) -> np.ndarray:
        """uint8[n, rescore_bytes] -> float32[n, dim]: the rescoring column's vectors (int8 times the scales)."""
        if self.rescore == "none":
            raise ValueError("this feature spec has no rescoring column (embed with output.rescore=int8)")
        if codes.ndim != 2 or codes.shape[1] != self.rescore_bytes:
            raise ValueError(f"rescoring rows have shape {codes.shape}; the spec says rows of {self.rescore_bytes} "
                             "bytes")
        return dequantize(codes, self.dim, self.rescore, self.rescore_scales)  # type: ignore[arg-type]

    # -- artifact ---------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write feature_spec.json (+ feature_spec.safetensors when there are arrays) into ``folder``."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = self.to_json_dict() | {"fingerprint": self.fingerprint}
        arrays = {k: getattr(self, k) for k in ARRAYS if getattr(self, k) is not None}
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
        for key in ("model", "dim", "quantization", "threshold_mode"):
            if key not in meta:
                raise ValueError(f"feature spec has no {key!r}")
        return cls(model=dict(meta["model"]), features=FeatureSettings.from_json(meta), dim=int(meta["dim"]),
                   quantization=meta["quantization"], threshold_mode=meta["threshold_mode"],
                   rescore=meta.get("rescore", "none"), **{k: arrays.get(k) for k in ARRAYS})

    def check_features(self, features: dict[str, Any], what: str) -> None:
        """Refuse when ``features`` (what an extractor computes, ``feature_part``) differ from this spec's."""
        mine = self.feature_part()
        diff = [k for k in sorted(mine.keys() | features.keys()) if mine.get(k) != features.get(k)]
        if diff:
            detail = "; ".join(f"{k}: spec {mine.get(k)!r}, {what} {features.get(k)!r}" for k in diff)
            raise SpecMismatchError(f"feature spec {self.fingerprint[:16]}… does not match {what} ({detail})")


CODE_KEYS = {"quantization": "encoder.quantization", "threshold_mode": "encoder.thresholds",
             "rescore": "output.rescore"}
"""The code part of a spec: every setting that changes the stored bytes of the same features, and the config key
that sets it (for errors that name the setting). A new code setting is added here once."""
CODE_FIELDS = tuple(CODE_KEYS)
ARRAYS = ("thresholds", "scales", "rescore_scales")
"""The per-dimension arrays (stored in the safetensors file)."""


def feature_part(model: dict[str, str], settings: FeatureSettings, dim: int) -> dict[str, Any]:
    """What decides the float features, as a spec's JSON holds it: a table and an encoder must agree on all of it."""
    return {"model": dict(sorted(model.items()))} | settings.to_json() | {"dim": dim}


def require_same_spec(expected: str, found: str, what: str) -> None:
    """Refuse to mix artifacts of different feature specs (the fingerprints differ)."""
    if expected != found:
        raise SpecMismatchError(f"{what} was made with feature spec {found[:16]}…, but {expected[:16]}… is "
                                "required; features from different specs are not comparable")
