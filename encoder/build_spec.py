"""The one place a feature spec is made from a config: reuse stored thresholds, calibrate, or neither.

Every decision about thresholds and scales lives here: whether a calibration sample is needed, which threshold mode a
quantization gets (``zero`` unless binary + calibrated), the optional rescoring column's int8 scales (``rescore``, the
embed job's ``output.rescore``), and whether a reused spec fits this encoder and this config.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from .encode import FeatureExtractor
from .encoder_config import EncoderConfig
from .quantize import RESCORE_MODES, calibrate_scales, calibrate_thresholds
from .spec import CODE_FIELDS, CODE_KEYS, FeatureSpec, SpecMismatchError
from .typed_config import ConfigError

logger = logging.getLogger(__name__)

SampleTexts = Callable[[int], Sequence[str]]
"""Given a row count, returns up to that many texts of the input (deterministically chosen) for calibration."""


def code_settings(cfg: EncoderConfig, rescore: str = "none") -> dict[str, str]:
    """The code part this config asks for (the threshold mode is ``zero`` unless binary + calibrated; ``rescore``:
    the rescoring column, ``none`` or ``int8``)."""
    if rescore not in RESCORE_MODES:
        raise ValueError(f"rescore = {rescore!r}; expected one of {RESCORE_MODES}")
    return {"quantization": cfg.quantization, "threshold_mode": cfg.thresholds if cfg.quantization == "binary"
            else "zero", "rescore": rescore}


def check_code(stored: FeatureSpec, cfg: EncoderConfig, what: str, hint: str, rescore: str = "none") -> None:
    """Refuse a stored spec whose code part is not the one ``cfg`` (and ``rescore``) asks for: SpecMismatchError (exit
    code 5) naming each setting, so a spec change never passes by reusing the stored spec silently."""
    want, have = code_settings(cfg, rescore), stored.code_part()
    diff = [k for k in CODE_FIELDS if want[k] != have[k]]
    if diff:
        detail = "; ".join(f"{CODE_KEYS[k]} = {want[k]!r} but {what} stores {have[k]!r}" for k in diff)
        raise SpecMismatchError(f"{detail}: {what} holds a {stored.quantization}/{stored.threshold_mode} spec "
                                f"({stored.fingerprint[:16]}…); {hint}")


def needs_calibration(cfg: EncoderConfig, rescore: str = "none") -> bool:
    """True when this config's spec needs a sample of the input (int8 scales, calibrated binary thresholds, the
    rescoring column's int8 scales)."""
    return cfg.thresholds_from is None and (
        cfg.quantization == "int8" or (cfg.quantization == "binary" and cfg.thresholds == "calibrated")
        or rescore == "int8")


def build_spec(cfg: EncoderConfig, extractor: FeatureExtractor, sample_texts: SampleTexts | None = None,
               rescore: str = "none") -> FeatureSpec:
    """The spec ``cfg`` asks for on ``extractor``'s model, with a rescoring column when ``rescore`` is ``int8``.
    ``sample_texts`` is called only when calibration is needed (one sample serves every array)."""
    if cfg.thresholds_from:
        return _reuse(cfg, extractor, rescore)
    thresholds = scales = rescore_scales = None
    if needs_calibration(cfg, rescore):
        if sample_texts is None:
            raise ValueError(f"quantization {cfg.quantization!r} with thresholds {cfg.thresholds!r} and rescore "
                             f"{rescore!r} needs a calibration sample")
        texts = list(sample_texts(cfg.calibration_rows))
        if not texts:
            raise ValueError("the calibration sample is empty: the input has no valid rows")
        binary_thresholds = cfg.quantization == "binary" and cfg.thresholds == "calibrated"
        what = (["int8 scales"] if cfg.quantization == "int8" else ["binary thresholds"] if binary_thresholds
                else []) + (["rescore int8 scales"] if rescore == "int8" else [])
        logger.info("calibrating %s on %d sample rows", " and ".join(what), len(texts))
        x = extractor.features(texts).values
        if cfg.quantization == "int8":
            scales = calibrate_scales(x)
        elif binary_thresholds:
            thresholds = calibrate_thresholds(x)
        if rescore == "int8":
            rescore_scales = calibrate_scales(x)
    return FeatureSpec(model=dict(extractor.loaded.fingerprint), features=extractor.settings, dim=extractor.dim,
                       **code_settings(cfg, rescore), thresholds=thresholds, scales=scales,
                       rescore_scales=rescore_scales)


def _reuse(cfg: EncoderConfig, extractor: FeatureExtractor, rescore: str = "none") -> FeatureSpec:
    """A stored spec, checked against this encoder and this config (quantization, threshold mode, rescoring column);
    its arrays (thresholds, scales, rescore scales) are reused as they are."""
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
               "point encoder.thresholds_from at a spec of these settings, or drop it to calibrate anew", rescore)
    return stored
