import json

import numpy as np
import pytest

from encoder.spec import FeatureSpec, SpecMismatchError, require_same_spec

BASE = dict(model={"name": "m", "sha256": "0" * 64}, layers=(6,), layer_combine="concat", pooling="mean",
            normalize=True, max_length=256, quantization="binary", threshold_mode="zero", dim=16)


def make(**changes):
    return FeatureSpec(**(BASE | changes))


CHANGES = {
    "model": {"name": "m", "sha256": "1" * 64},
    "layers": (5, 6),
    "layer_combine": "mean",
    "pooling": "cls",
    "normalize": False,
    "max_length": 128,
    "quantization": "fp16",
    "dim": 8,
}


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_fingerprint_changes_when_any_part_changes(key):
    assert make(**{key: CHANGES[key]}).fingerprint != make().fingerprint


def test_fingerprint_changes_with_thresholds():
    t = np.zeros(16, np.float32)
    a = make(threshold_mode="calibrated", thresholds=t)
    b = make(threshold_mode="calibrated", thresholds=t + np.float32(1e-3))
    assert a.fingerprint != b.fingerprint != make().fingerprint


def test_save_load_round_trip(tmp_path):
    spec = make(threshold_mode="calibrated", thresholds=np.arange(16, dtype=np.float32))
    spec.save(tmp_path)
    back = FeatureSpec.load(tmp_path)
    assert back.fingerprint == spec.fingerprint
    np.testing.assert_array_equal(back.thresholds, spec.thresholds)
    assert json.loads((tmp_path / "feature_spec.json").read_text())["n_bytes"] == 2


def test_edited_artifact_is_refused(tmp_path):
    make().save(tmp_path)
    p = tmp_path / "feature_spec.json"
    meta = json.loads(p.read_text())
    meta["pooling"] = "max"
    p.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match its contents"):
        FeatureSpec.load(tmp_path)


def test_calibrated_binary_needs_thresholds():
    with pytest.raises(ValueError, match="thresholds"):
        make(threshold_mode="calibrated")


def test_require_same_spec():
    require_same_spec("a" * 64, "a" * 64, "table")
    with pytest.raises(SpecMismatchError, match="not comparable"):
        require_same_spec("a" * 64, "b" * 64, "table")
