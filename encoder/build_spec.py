"""The one place a feature spec is made from a config: reuse stored thresholds, calibrate, or neither.

Every decision about thresholds and scales lives here: whether a calibration sample is needed, which threshold mode a
quantization gets (``zero`` unless binary + calibrated), and whether a reused spec fits this encoder and this config.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from .encode import FeatureExtractor
from .encoder_config import EncoderConfig
from .quantize import calibrate_scales, calibrate_thresholds
from .spec import CODE_FIELDS, CODE_KEYS, FeatureSpec, SpecMismatchError
from .typed_config import ConfigError

logger = logging.getLogger(__name__)

SampleTexts = Callable[[int], Sequence[str]]
"""Given a row count, returns up to that many texts of the input (deterministically chosen) for calibration."""


def code_settings(cfg: EncoderConfig) -> dict[str, str]:
    """The code part this config asks for (the threshold mode is ``zero`` unless binary + calibrated)."""
    return {"quantization": cfg.quantization, "threshold_mode": cfg.thresholds if cfg.quantization == "binary"
            else "zero"}


def check_code(stored: FeatureSpec, cfg: EncoderConfig, what: str, hint: str) -> None:
    """Refuse a stored spec whose code part is not the one ``cfg`` asks for: SpecMismatchError (exit code 5) naming
    each setting, so a spec change never passes by reusing the stored spec silently."""
    want, have = code_settings(cfg), stored.code_part()
    diff = [k for k in CODE_FIELDS if want[k] != have[k]]
    if diff:
        detail = "; ".join(f"{CODE_KEYS[k]} = {want[k]!r} but {what} stores {have[k]!r}" for k in diff)
        raise SpecMismatchError(f"{detail}: {what} holds a {stored.quantization}/{stored.threshold_mode} spec "
                                f"({stored.fingerprint[:16]}…); {hint}")


def needs_calibration(cfg: EncoderConfig) -> bool:
    """True when this config's spec needs a sample of the input (int8 scales, calibrated binary thresholds)."""
    return cfg.thresholds_from is None and (
        cfg.quantization == "int8" or (cfg.quantization == "binary" and cfg.thresholds == "calibrated"))


def build_spec(cfg: EncoderConfig, extractor: FeatureExtractor, sample_texts: SampleTexts | None = None
               ) -> FeatureSpec:
    """The spec ``cfg`` asks for on ``extractor``'s model. ``sample_texts`` is called only when calibration is needed."""
    if cfg.thresholds_from:
        return _reuse(cfg, extractor)
    thresholds = scales = None
    if needs_calibration(cfg):
        if sample_texts is None:
            raise ValueError(f"quantization {cfg.quantization!r} with thresholds {cfg.thresholds!r} needs a "
                             "calibration sample")
        texts = list(sample_texts(cfg.calibration_rows))
        if not texts:
            raise ValueError("the calibration sample is empty: the input has no valid rows")
        logger.info("calibrating %s on %d sample rows",
                    "int8 scales" if cfg.quantization == "int8" else "binary thresholds", len(texts))
        x = extractor.features(texts).values
        if cfg.quantization == "int8":
            scales = calibrate_scales(x)
        else:
            thresholds = calibrate_thresholds(x)
    return FeatureSpec(model=dict(extractor.loaded.fingerprint), features=extractor.settings, dim=extractor.dim,
                       **code_settings(cfg), thresholds=thresholds, scales=scales)


def _reuse(cfg: EncoderConfig, extractor: FeatureExtractor) -> FeatureSpec:
    """A stored spec, checked against this encoder and this config (quantization and threshold mode)."""
    key = "encoder.thresholds_from"
    try:
        stored = FeatureSpec.load(cfg.thresholds_from)  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        raise ConfigError(str(cfg.thresholds_from), key, f"cannot be read: {exc}") from None
    try:
        extractor.check_spec(stored)
    except SpecMismatchError as exc:
        raise ConfigError(str(cfg.thresholds_from), key, f"was made by another encoder: {exc}") from None
    check_code(stored, cfg, f"{key} ({cfg.thresholds_from})",
               "point encoder.thresholds_from at a spec of these settings, or drop it to calibrate anew")
    return stored
