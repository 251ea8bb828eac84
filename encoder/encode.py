"""Texts -> pooled float features -> stored codes, in one process (what each Spark worker runs).

Speed comes from: duplicate texts folded, length-bucketed batches under a token budget, inference mode, and on GPU
autocast to fp16/bf16 with a larger budget. Results always come back in input order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from .batching import plan_batches, restore_order, unique_texts
from .model import LoadedEncoder
from .pooling import LayerCombine, Pooling, feature_dim, pool_layers, resolve_layers
from .quantize import ThresholdMode, Quantization, calibrate_scales, calibrate_thresholds
from .spec import FeatureSpec, SpecMismatchError

logger = logging.getLogger(__name__)

AUTOCASTS: tuple[str, ...] = ("none", "fp16", "bf16")
Autocast = Literal["none", "fp16", "bf16"]


@dataclass(frozen=True)
class Features:
    """Float features for a list of texts, in input order."""

    values: np.ndarray      # float32[n, dim]
    n_tokens: np.ndarray    # int32[n]: tokens before truncation, special tokens included
    truncated: np.ndarray   # bool[n]: n_tokens > max_length


@dataclass(frozen=True)
class Codes:
    """Stored codes for a list of texts, in input order."""

    codes: np.ndarray       # uint8[n, n_bytes]
    n_tokens: np.ndarray    # int32[n]
    truncated: np.ndarray   # bool[n]


class FeatureExtractor:
    """Runs the encoder and pools features as configured (the part of a spec that needs the model)."""

    def __init__(self, loaded: LoadedEncoder, layers: str | Sequence[int] = "last", pooling: Pooling = "mean",
                 layer_combine: LayerCombine = "concat", normalize: bool = True, max_length: int = 256,
                 token_budget: int = 8192, max_batch_rows: int = 512, autocast: Autocast = "none"):
        model_max = int(getattr(loaded.model.config, "max_position_embeddings", max_length))
        if not 2 < max_length <= model_max:
            raise ValueError(f"max_length = {max_length}; this model allows 3..{model_max}")
        if autocast not in AUTOCASTS:
            raise ValueError(f"autocast = {autocast!r}; expected one of {', '.join(map(repr, AUTOCASTS))}")
        self.loaded = loaded
        self.layers = resolve_layers(layers, loaded.num_layers)
        self.pooling = pooling
        self.layer_combine = layer_combine
        self.normalize = normalize
        self.max_length = max_length
        self.token_budget = token_budget
        self.max_batch_rows = max_batch_rows
        self.autocast = autocast if loaded.device.startswith("cuda") else "none"
        self.dim = feature_dim(loaded.hidden_size, len(self.layers), layer_combine)

    # -- tokenization -----------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """-> (input ids truncated to max_length, full token counts int32[n] before truncation)."""
        tok = self.loaded.tokenizer
        full = tok(list(texts), add_special_tokens=True, truncation=False, return_attention_mask=False,
                   return_token_type_ids=False, verbose=False)["input_ids"]
        counts = np.fromiter((len(x) for x in full), dtype=np.int32, count=len(full))
        long_rows = np.flatnonzero(counts > self.max_length)
        if len(long_rows):
            cut = tok([texts[i] for i in long_rows], add_special_tokens=True, truncation=True,
                      max_length=self.max_length, return_attention_mask=False, return_token_type_ids=False)
            for i, ids in zip(long_rows, cut["input_ids"]):
                full[i] = ids
        return full, counts

    # -- features ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _forward(self, batch_ids: list[list[int]]) -> torch.Tensor:
        """One padded batch -> pooled float32[b, dim] on the model's device."""
        pad = self.loaded.tokenizer.pad_token_id or 0
        width = max(len(x) for x in batch_ids)
        ids = torch.full((len(batch_ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
        for r, x in enumerate(batch_ids):
            ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[r, : len(x)] = 1
        device = self.loaded.device
        ids, mask = ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        only_last = self.layers == (self.loaded.num_layers,)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.autocast)
        with torch.autocast(device_type="cuda", dtype=dtype, enabled=dtype is not None):
            out = self.loaded.model(input_ids=ids, attention_mask=mask, output_hidden_states=not only_last)
        hidden = {self.loaded.num_layers: out.last_hidden_state} if only_last else out.hidden_states
        return pool_layers(hidden, mask, self.layers, self.pooling, self.layer_combine, self.normalize)  # type: ignore[arg-type]

    def features(self, texts: Sequence[str]) -> Features:
        """Texts -> float32[n, dim] features with token counts and truncation flags, in input order."""
        n = len(texts)
        if n == 0:
            return Features(np.zeros((0, self.dim), np.float32), np.zeros(0, np.int32), np.zeros(0, bool))
        uniq, inverse = unique_texts(texts)
        ids, counts = self.tokenize(uniq)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        batches = plan_batches(lengths, self.token_budget, self.max_batch_rows)
        parts = [self._forward([ids[i] for i in b]).float().cpu().numpy() for b in batches]
        values = restore_order(parts, batches, len(uniq))
        return Features(values[inverse], counts[inverse], counts[inverse] > self.max_length)

    # -- specs ------------------------------------------------------------------------------------------------
    def make_spec(self, quantization: Quantization, threshold_mode: ThresholdMode = "zero",
                  calibration: np.ndarray | None = None) -> FeatureSpec:
        """Freeze this extractor's settings into a spec; calibrated thresholds / int8 scales need a sample."""
        thresholds = scales = None
        mode: str = threshold_mode if quantization == "binary" else "zero"
        needs_sample = (quantization == "binary" and mode == "calibrated") or quantization == "int8"
        if needs_sample and calibration is None:
            raise ValueError(f"quantization {quantization!r} with thresholds {mode!r} needs a calibration sample")
        if quantization == "binary" and mode == "calibrated":
            thresholds = calibrate_thresholds(calibration)  # type: ignore[arg-type]
        if quantization == "int8":
            scales = calibrate_scales(calibration)  # type: ignore[arg-type]
        return FeatureSpec(model=dict(self.loaded.fingerprint), layers=self.layers, layer_combine=self.layer_combine,
                           pooling=self.pooling, normalize=self.normalize, max_length=self.max_length,
                           quantization=quantization, threshold_mode=mode, dim=self.dim, thresholds=thresholds,
                           scales=scales)

    def check_spec(self, spec: FeatureSpec) -> None:
        """Refuse a spec this extractor would not reproduce (other model, layers, pooling, ...)."""
        mine = self.make_spec("fp32").to_json_dict()
        theirs = spec.to_json_dict()
        keys = ("model", "layers", "layer_combine", "pooling", "normalize", "max_length", "dim")
        diff = [k for k in keys if mine[k] != theirs[k]]
        if diff:
            detail = "; ".join(f"{k}: spec {theirs[k]!r}, here {mine[k]!r}" for k in diff)
            raise SpecMismatchError(f"feature spec {spec.fingerprint[:16]}… does not match this encoder ({detail})")

    def encode(self, texts: Sequence[str], spec: FeatureSpec) -> Codes:
        """Texts -> stored codes under ``spec`` (checked against this extractor), in input order."""
        f = self.features(texts)
        return Codes(spec.encode_features(f.values), f.n_tokens, f.truncated)
