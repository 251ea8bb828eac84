"""The feature settings: the one type that says how token ids become a pooled float feature.

Layers, layer combination, pooling, normalisation, max length and the long-text keys live here once. The embed
job's config (``EncoderConfig``), the feature spec (``FeatureSpec``), the extractor and tuning all embed this type,
so a new setting (or a new pooling mode) is added here and in ``pooling.py``, nowhere else. It owns its keys (what
a spec's JSON holds) and its output width (``dim``), as sentence-transformers' ``Pooling`` does.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from .backends import BACKENDS, Backend, backend_recipe
from .pooling import LAYER_PRESETS, LayerCombine, Pooling, feature_dim, resolve_layers
from .typed_config import ConfigError, require_at_least

LongText = Literal["truncate", "chunks"]
LONG_TEXTS: tuple[str, ...] = typing.get_args(LongText)
CHUNK_KEYS = ("long_text", "chunk_tokens", "chunk_stride", "max_chunks")   # in a spec only under long_text = chunks
RECIPE_KEY = "backend_recipe"      # in a spec beside backend, only when the backend is not torch


@dataclass(frozen=True)
class FeatureSettings:
    """How pooled features are made. ``layers`` is a preset or hidden-state indices as configured; ``resolve`` turns
    it into indices for one model (what a spec stores)."""

    # 'last4' pools the last four layers (the paper's multi-layer features). Averaged ('mean') they measured +1.4
    # points over 'last' for fp32 heads and +2.6 for binary ones on mr/sst2/mpqa, at the same 384 bits (48 bytes);
    # 'concat' adds +0.6 (fp32) / +0.8 (binary) at 4x the bytes and head cost. 'last' reproduces sentence-transformers'
    # all-MiniLM-L6-v2 output exactly.
    layers: str | tuple[int, ...] = "last4"
    layer_combine: LayerCombine = "mean"     # mean keeps the width d; concat keeps each layer apart (d x layers)
    pooling: Pooling = "mean"                # the model was trained with mean pooling
    normalize: bool = True                   # unit length, as the model's own pipeline does
    max_length: int = 256                    # the model's training length; longer texts are truncated and flagged
    # Texts longer than max_length: 'truncate' encodes the first max_length tokens; 'chunks' encodes overlapping
    # windows of chunk_tokens tokens (special tokens included) every chunk_stride tokens and pools them into one
    # feature per text (docs/embed.md, "Long texts", has the measured accuracy and cost).
    long_text: LongText = "truncate"
    chunk_tokens: int = 256                  # window length; at max_length a text's first window is its truncation
    chunk_stride: int = 224                  # tokens between window starts: 30 tokens of overlap at 256 (1.13x tokens)
    max_chunks: int = 32                     # windows per text at most (~6,000 tokens); a text cut here is flagged
    # What runs the forward pass on a CPU (encoder/backends.py; docs/backends.md has speed and accuracy): torch, onnx
    # (the same fp32 graph in ONNX Runtime) or onnx_int8 (its int8-weight graph). Part of the spec: a table made by
    # one backend is not mixed with another's, and its heads are refused on the other.
    backend: Backend = "torch"

    def validate(self, source: str, prefix: str) -> None:
        if isinstance(self.layers, str) and self.layers not in LAYER_PRESETS:
            allowed = ", ".join(map(repr, LAYER_PRESETS))
            raise ConfigError(source, f"{prefix}layers",
                              f"= {self.layers!r}; expected one of {allowed} or a list of layer indices")
        if not 3 <= self.max_length <= 512:
            raise ConfigError(source, f"{prefix}max_length", f"= {self.max_length}; expected 3..512")
        if not 3 <= self.chunk_tokens <= 512:
            raise ConfigError(source, f"{prefix}chunk_tokens", f"= {self.chunk_tokens}; expected 3..512")
        if not 1 <= self.chunk_stride <= self.chunk_tokens - 2:
            raise ConfigError(source, f"{prefix}chunk_stride", f"= {self.chunk_stride}; expected 1..chunk_tokens - 2 "
                              f"({self.chunk_tokens - 2}): windows must overlap or touch")
        require_at_least(self, ("max_chunks",), 1, source, prefix)

    @property
    def chunks(self) -> bool:
        return self.long_text == "chunks"

    def resolve(self, num_layers: int) -> "FeatureSettings":
        """The same settings with ``layers`` as hidden-state indices of a model with ``num_layers`` layers (and, under
        ``truncate``, the unused window keys at their defaults, so equal features are equal settings)."""
        out = dataclasses.replace(self, layers=resolve_layers(self.layers, num_layers))
        if not self.chunks:
            defaults = FeatureSettings()
            out = dataclasses.replace(out, **{k: getattr(defaults, k) for k in CHUNK_KEYS})
        return out

    def dim(self, hidden_size: int) -> int:
        """Width of the pooled feature for a model of ``hidden_size`` (layers must be resolved)."""
        if isinstance(self.layers, str):
            raise ValueError("dim needs resolved layers (FeatureSettings.resolve)")
        return feature_dim(hidden_size, len(self.layers), self.layer_combine)

    def to_json(self) -> dict[str, Any]:
        """The keys a feature spec stores: the long-text ones only under ``chunks``, the backend (with its graph's
        recipe) only when it is not torch, so a spec written before those keys existed keeps its fingerprint."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if (self.chunks or f.name not in CHUNK_KEYS) and (f.name != "backend" or self.backend != "torch")}
        if isinstance(out["layers"], tuple):
            out["layers"] = list(out["layers"])
        if self.backend != "torch":
            out[RECIPE_KEY] = backend_recipe(self.backend)
        return out

    @classmethod
    def from_json(cls, meta: dict[str, Any]) -> "FeatureSettings":
        """Read the keys ``to_json`` writes (missing long-text keys: truncate)."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in meta:
                v = meta[f.name]
                kwargs[f.name] = tuple(int(i) for i in v) if f.name == "layers" and isinstance(v, list) else v
            elif f.name not in CHUNK_KEYS and f.name != "backend":
                raise ValueError(f"feature spec has no {f.name!r}")
        if kwargs.get("long_text", "truncate") not in LONG_TEXTS:
            raise ValueError(f"long_text = {kwargs['long_text']!r}; expected one of {LONG_TEXTS}")
        backend = kwargs.get("backend", "torch")
        if backend not in BACKENDS:
            raise ValueError(f"backend = {backend!r}; expected one of {BACKENDS}")
        recipe = meta.get(RECIPE_KEY, "")
        if recipe != backend_recipe(backend):
            raise ValueError(f"the spec's {backend} graph was built by recipe {recipe!r}; this version builds "
                             f"{backend_recipe(backend)!r} (re-embed with this version's backend)")
        return cls(**kwargs)


def settings_keys() -> tuple[str, ...]:
    """Every key of the feature settings (the YAML keys of ``encoder:`` that belong to them)."""
    return tuple(f.name for f in dataclasses.fields(FeatureSettings))
