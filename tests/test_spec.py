import json

import numpy as np
import pytest

from encoder.spec import FeatureSpec, SpecMismatchError, require_same_spec

BASE = dict(model={"name": "m", "sha256": "0" * 64}, layers=(6,), layer_combine="concat", pooling="mean",
            normalize=True, max_length=256, quantization="binary", threshold_mode="zero", dim=16)


def make(**changes):
    return FeatureSpec.of(**(BASE | changes))


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


# Fingerprints computed by the code before the feature settings became one type (commit 4b43760): tables and heads
# made then must stay readable, so the refactor must not move a single byte of the canonical JSON.
BEFORE = {
    "truncate binary": (dict(model={"name": "all-MiniLM-L6-v2", "sha256": "ab" * 32}, layers=(3, 4, 5, 6),
                             layer_combine="mean", pooling="mean", normalize=True, max_length=256,
                             quantization="binary", threshold_mode="zero", dim=384),
                        "c27701f0302373b915d6b97d9a97fc604f9f3a317e2e0ec95ab9be60bfc92957"),
    "chunks calibrated": (dict(model={"name": "m", "sha256": "cd" * 32}, layers=(6,), layer_combine="concat",
                               pooling="cls", normalize=False, max_length=128, quantization="binary",
                               threshold_mode="calibrated", dim=8, long_text="chunks", chunk_tokens=64,
                               chunk_stride=48, max_chunks=8, thresholds=np.arange(8, dtype=np.float32) / 10),
                          "e682b2d96debc91c4de66022f603643b64a71d598550ddcd0a9319df2d3ffcb0"),
    "int8": (dict(model={"name": "m", "sha256": "cd" * 32}, layers=(5, 6), layer_combine="mean", pooling="max",
                  normalize=True, max_length=64, quantization="int8", threshold_mode="zero", dim=8,
                  scales=np.arange(1, 9, dtype=np.float32) / 7),
             "ae024b52e81096955b9e429c79f07f898d53a2fb1b626a9619dfd173aa9e7ce4"),
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_fingerprints_of_existing_specs_are_unchanged(name, tmp_path):
    kwargs, fingerprint = BEFORE[name]
    spec = FeatureSpec.of(**kwargs)
    assert spec.fingerprint == fingerprint
    spec.save(tmp_path)
    assert FeatureSpec.load(tmp_path).fingerprint == fingerprint


def test_a_truncate_spec_ignores_window_keys_it_does_not_use():
    """Under truncate the window keys are not part of the features: settings that differ only there resolve to the
    same settings and the same fingerprint."""
    from encoder.features import FeatureSettings

    a = FeatureSettings(chunk_tokens=64).resolve(6)
    b = FeatureSettings().resolve(6)
    assert a == b and make().replace(features=a).fingerprint == make().replace(features=b).fingerprint
    assert FeatureSettings(long_text="chunks", chunk_tokens=64, chunk_stride=48).resolve(6) != \
        FeatureSettings(long_text="chunks").resolve(6)
