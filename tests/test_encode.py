"""The encoder library on a tiny random model: order, dedup, batching invariance, truncation, spec checks."""
import numpy as np
import pytest

from encoder.build_spec import build_spec
from encoder.encode import FeatureExtractor
from encoder.encoder_config import EncoderConfig
from encoder.features import FeatureSettings
from encoder.pooling import POOLING_MODES
from encoder.spec import SpecMismatchError

TEXTS = ["the man is playing a guitar .", "hello", "someone is strumming a guitar", "the stock market fell today",
         "a very good movie , not bad", "hello world", "it was the man"]


def test_features_come_back_in_input_order(tiny_loaded):
    fx = FeatureExtractor(tiny_loaded, EncoderConfig(token_budget=16))  # several batches
    base = fx.features(TEXTS).values
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    shuffled = fx.features([TEXTS[i] for i in perm]).values
    np.testing.assert_array_equal(shuffled, base[perm])


def test_batch_composition_does_not_change_features(tiny_loaded):
    import torch

    # bit-exact at one thread, as a Spark task runs (spark.task.cpus = 1): with two, the GEMM splits its work by
    # batch size and the last bits move (~1e-7); an earlier test in the session may have set two
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check_batch_composition(tiny_loaded)
    finally:
        torch.set_num_threads(threads)


def _check_batch_composition(tiny_loaded):
    fx = FeatureExtractor(tiny_loaded, EncoderConfig(token_budget=4096))
    together = fx.features(TEXTS).values
    alone = np.stack([fx.features([t]).values[0] for t in TEXTS])
    np.testing.assert_array_equal(together, alone)     # bit-exact: batches hold one token length, nothing padded
    others = fx.features(TEXTS[:3] + ["a very good movie , not bad , not bad at all"]).values
    np.testing.assert_array_equal(others[:3], together[:3])


def test_duplicates_are_encoded_once(tiny_loaded, monkeypatch):
    fx = FeatureExtractor(tiny_loaded)
    seen = []
    real = fx._forward
    monkeypatch.setattr(fx, "_forward", lambda ids: seen.append(len(ids)) or real(ids))
    out = fx.features(["hello", "the man", "hello", "hello"]).values
    assert sum(seen) == 2
    np.testing.assert_array_equal(out[0], out[2])


def test_truncation_is_flagged_with_full_token_count(tiny_loaded):
    fx = FeatureExtractor(tiny_loaded, EncoderConfig(features=FeatureSettings(max_length=8)))
    f = fx.features(["hello world", " ".join(["guitar"] * 20)])
    assert f.n_tokens.tolist() == [4, 22]
    assert f.truncated.tolist() == [False, True]
    assert f.values.shape == (2, 32)


@pytest.mark.parametrize("layers,combine,dim", [("last", "concat", 32), ("all", "concat", 64), ("all", "mean", 32)])
def test_dimension_follows_the_choice(tiny_loaded, layers, combine, dim):
    cfg = EncoderConfig(features=FeatureSettings(layers=layers, layer_combine=combine))
    fx = FeatureExtractor(tiny_loaded, cfg)
    spec = build_spec(cfg, fx)
    assert fx.dim == spec.dim == dim and spec.n_bytes == dim // 8
    assert fx.encode(TEXTS, spec).codes.shape == (len(TEXTS), dim // 8)


def test_calibrated_spec_needs_a_sample_and_balances_bits(tiny_loaded):
    cfg = EncoderConfig(thresholds="calibrated", features=FeatureSettings(normalize=False))
    fx = FeatureExtractor(tiny_loaded, cfg)
    with pytest.raises(ValueError, match="calibration sample"):
        build_spec(cfg, fx)
    texts = TEXTS * 3 + ["the market", "a movie", "you and i"]
    sample = fx.features(texts).values
    spec = build_spec(cfg, fx, lambda n: texts[:n])
    bits = np.unpackbits(spec.encode_features(sample), axis=1)
    assert abs(bits.mean() - 0.5) < 0.1


def test_spec_of_another_extractor_is_refused(tiny_loaded):
    cls_cfg = EncoderConfig(features=FeatureSettings(pooling="cls"))
    spec = build_spec(cls_cfg, FeatureExtractor(tiny_loaded, cls_cfg))
    with pytest.raises(SpecMismatchError, match="pooling"):
        FeatureExtractor(tiny_loaded, EncoderConfig(features=FeatureSettings(pooling="mean"))).check_spec(spec)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_every_pooling_mode_flows_from_the_settings_through_the_extractor_into_the_spec(tiny_loaded, mode):
    """A mode added to encoder/pooling.py needs nothing else: the settings type, the extractor and the spec take it."""
    cfg = EncoderConfig(features=FeatureSettings(pooling=mode, normalize=False))
    fx = FeatureExtractor(tiny_loaded, cfg)
    spec = build_spec(cfg, fx)
    x = fx.features(["hello world", "a longer text of several tokens"]).values
    assert x.shape == (2, fx.dim) and np.isfinite(x).all() and spec.to_json_dict()["pooling"] == mode
    fx.check_spec(spec)
