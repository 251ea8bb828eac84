"""Long texts as windows: boundaries and stride, pooling, bit-identical short texts, bounded cost for huge texts."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from encoder.build_spec import build_spec
from encoder.encode import FeatureExtractor
from encoder.encoder_config import EncoderConfig
from encoder.features import FeatureSettings
from encoder.spec import FeatureSpec
from encoder.typed_config import ConfigError, build
from encoder.windows import pool_windows, window_starts, window_weights

SHORT = ["the man is playing a guitar .", "hello", "someone is strumming a guitar", "the stock market fell today",
         "a very good movie , not bad", "hello world", "it was the man", ""]
WORDS = "the a man is playing guitar someone strumming stock market fell today hello world good bad movie".split()


@pytest.mark.parametrize("n,content,stride,cap,starts,cut", [
    (5, 8, 4, 10, [0], False),                    # shorter than a window: one window
    (8, 8, 4, 10, [0], False),                    # exactly one window
    (9, 8, 4, 10, [0, 4], False),                 # one token over: a second window, shorter
    (20, 8, 4, 10, [0, 4, 8, 12], False),         # 12 + 8 = 20: the strided windows reach the end exactly
    (21, 8, 4, 10, [0, 4, 8, 12, 16], False),     # the last window holds what is left (5 tokens)
    (21, 8, 8, 10, [0, 8, 16], False),            # stride = window: no overlap
    (100, 8, 4, 3, [0, 4, 8], True),              # the cap keeps the first windows and says so
])
def test_window_boundaries_and_stride(n, content, stride, cap, starts, cut):
    got, was_cut = window_starts(n, content, stride, cap)
    assert got == starts and was_cut == cut
    tokens = list(range(n))
    windows = [tokens[s:s + content] for s in got]
    assert all(len(w) == min(n, content) for w in windows[:-1])            # all but the last are full length
    assert sum(map(len, windows)) <= n * content / stride + content       # cost bounded by the stride
    if not cut:
        assert sorted(set().union(*map(set, windows))) == tokens          # every token is read
        assert window_weights(got, content, n).sum() == n                 # each token counted once
    assert window_weights([0, 4, 8, 12, 16], 8, 21).tolist() == [8, 4, 4, 4, 1]


def test_pooling_weights_windows_and_keeps_single_windows_bit_for_bit():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 4)).astype(np.float32)
    owner = np.array([0, 1, 2, 1, 1])
    w = np.array([3.0, 8.0, 2.0, 4.0, 1.0])
    out = pool_windows(v, owner, w, 3, normalize=False)
    assert out[0].tobytes() == v[0].tobytes() and out[2].tobytes() == v[2].tobytes()
    np.testing.assert_allclose(out[1], (8 * v[1] + 4 * v[3] + 1 * v[4]) / 13, rtol=1e-6)
    normed = pool_windows(v, owner, w, 3, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(normed[1]), 1.0, rtol=1e-6)


def test_a_text_within_one_window_gets_exactly_the_truncate_features(tiny_loaded):
    base = dict(max_length=16, chunk_tokens=16, chunk_stride=8)
    long_text = " ".join(WORDS * 4)                          # 70 tokens: several windows
    texts = SHORT + [long_text]
    trunc = FeatureExtractor(tiny_loaded, EncoderConfig(token_budget=64, features=FeatureSettings(**base))).features(texts)
    chunk = FeatureExtractor(tiny_loaded, EncoderConfig(token_budget=64, features=FeatureSettings(
        long_text="chunks", **base))).features(texts)
    short = slice(0, len(SHORT))
    assert chunk.values[short].tobytes() == trunc.values[short].tobytes()      # bit-identical
    assert chunk.n_tokens.tolist() == trunc.n_tokens.tolist()
    assert trunc.truncated[-1] and not chunk.truncated[-1]                   # chunks read the whole text
    assert not np.allclose(chunk.values[-1], trunc.values[-1])


def test_long_text_feature_is_the_pooled_windows_whatever_the_padding(tiny_loaded):
    """Windows of a long text batched with short texts (padding) pool to the same feature as encoded alone."""
    cfg = EncoderConfig(token_budget=48, features=FeatureSettings(long_text="chunks", max_length=16, chunk_tokens=16, chunk_stride=10))
    fx = FeatureExtractor(tiny_loaded, cfg)
    long_text = " ".join(WORDS * 3)
    alone = fx.features([long_text]).values[0]
    mixed = fx.features(SHORT + [long_text]).values[-1]
    np.testing.assert_allclose(mixed, alone, atol=1e-5)
    ids, owner, weights, counts, cut = fx.windows([long_text])
    single = FeatureExtractor(tiny_loaded, EncoderConfig(token_budget=48, features=FeatureSettings(max_length=16)))
    windows = np.stack([single._forward([w]).numpy()[0] for w in ids])
    np.testing.assert_allclose(alone, pool_windows(windows, owner, weights, 1, True)[0], atol=1e-5)


def test_a_one_megabyte_text_encodes_with_bounded_cost(tiny_loaded, monkeypatch):
    cfg = EncoderConfig(features=FeatureSettings(long_text="chunks", chunk_tokens=64, chunk_stride=48, max_chunks=8))
    fx = FeatureExtractor(tiny_loaded, cfg)
    text = (" ".join(WORDS) + " ") * (1_000_000 // 90)
    assert len(text.encode()) >= 1_000_000
    rows = []
    real = fx._forward
    monkeypatch.setattr(fx, "_forward", lambda ids: rows.append(len(ids)) or real(ids))
    tracemalloc.start()
    f = fx.features([text, "hello"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sum(rows) == 8 + 1                     # max_chunks windows + the short text, nothing more
    assert f.truncated.tolist() == [True, False] and f.n_tokens[0] > 150_000
    assert peak < 200 * 2**20, peak               # token ids of the whole text, not a tensor per token


def test_the_strategy_is_part_of_the_spec_and_old_specs_stay_valid(tiny_loaded, tmp_path):
    trunc_cfg = EncoderConfig()
    chunk_cfg = EncoderConfig(features=FeatureSettings(long_text="chunks"))
    trunc = build_spec(trunc_cfg, FeatureExtractor(tiny_loaded, trunc_cfg))
    chunk = build_spec(chunk_cfg, FeatureExtractor(tiny_loaded, chunk_cfg))
    assert trunc.to_json_dict()["format_version"] == 1 and "long_text" not in trunc.to_json_dict()
    assert chunk.to_json_dict()["format_version"] == 2 and chunk.to_json_dict()["chunk_stride"] == 224
    assert chunk.fingerprint != trunc.fingerprint
    assert chunk.replace(chunk_stride=100).fingerprint != chunk.fingerprint
    chunk.save(tmp_path / "c")
    assert FeatureSpec.load(tmp_path / "c").fingerprint == chunk.fingerprint
    trunc.save(tmp_path / "t")
    assert FeatureSpec.load(tmp_path / "t").fingerprint == trunc.fingerprint
    with pytest.raises(Exception, match="long_text"):
        FeatureExtractor(tiny_loaded, trunc_cfg).check_spec(chunk)


@pytest.mark.parametrize("data,key", [({"long_text": "split"}, "long_text"), ({"chunk_stride": 255}, "chunk_stride"),
                                      ({"chunk_tokens": 1000}, "chunk_tokens"), ({"max_chunks": 0}, "max_chunks")])
def test_long_text_settings_are_validated(data, key):
    with pytest.raises(ConfigError, match=rf"encoder\.{key} "):
        build(EncoderConfig, data, "x.yaml", "encoder.")


def test_a_chunks_encoder_refuses_a_truncate_spec(tiny_loaded):
    """A reused truncate spec has no long-text keys; the chunks encoder's extra keys must still count."""
    trunc_cfg = EncoderConfig()
    trunc = build_spec(trunc_cfg, FeatureExtractor(tiny_loaded, trunc_cfg))
    with pytest.raises(Exception, match="long_text"):
        FeatureExtractor(tiny_loaded, EncoderConfig(features=FeatureSettings(long_text="chunks"))).check_spec(trunc)
