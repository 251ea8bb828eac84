"""Exact Hamming top-k over packed codes: equals brute force, ties broken by id, independent of blocks and order."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from encoder.build_spec import build_spec
from encoder.encode import FeatureExtractor
from encoder.encoder_config import EncoderConfig
from encoder.search import CodeIndex, hamming, top_k
from encoder.spec import SpecMismatchError


def ranks_of(ids: list[str]) -> np.ndarray:
    r = np.empty(len(ids), np.int64)
    r[np.argsort(np.asarray(ids, dtype=object), kind="stable")] = np.arange(len(ids))
    return r


@pytest.mark.parametrize("n_bytes", [1, 6, 48])
def test_hamming_equals_unpacked_bits(n_bytes):
    rng = np.random.default_rng(n_bytes)
    q = rng.integers(0, 256, (3, n_bytes), dtype=np.uint8)
    c = rng.integers(0, 256, (50, n_bytes), dtype=np.uint8)
    want = (np.unpackbits(q, axis=1)[:, None, :] != np.unpackbits(c, axis=1)[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(hamming(q, c), want)


@pytest.mark.parametrize("block_rows", [7, 100, 10_000])
def test_top_k_equals_brute_force_with_ties_broken_by_id(block_rows):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (300, 1), dtype=np.uint8)           # 2 bits: nearly every distance is a tie
    ids = [f"id{rng.integers(0, 10**6):07d}-{i}" for i in range(300)]
    queries = rng.integers(0, 256, (5, 1), dtype=np.uint8)
    rows, dist = top_k(queries, codes, ranks_of(ids), 10, block_rows=block_rows)
    d = hamming(queries, codes)
    for qi in range(5):
        want = sorted(range(300), key=lambda r: (d[qi, r], ids[r]))[:10]
        assert rows[qi].tolist() == want and dist[qi].tolist() == [d[qi, r] for r in want]


def test_results_do_not_depend_on_corpus_order():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (500, 6), dtype=np.uint8)
    ids = [f"r{i}" for i in range(500)]
    q = codes[:3]
    rows, _ = top_k(q, codes, ranks_of(ids), 20, block_rows=64)
    perm = rng.permutation(500)
    rows_p, _ = top_k(q, codes[perm], ranks_of([ids[i] for i in perm]), 20, block_rows=64)
    assert [[ids[r] for r in row] for row in rows] == [[ids[perm[r]] for r in row] for row in rows_p]
    assert top_k(q, codes[:5], ranks_of(ids[:5]), 20)[0].shape == (3, 5)     # k larger than the corpus


def test_code_index_finds_the_text_itself_and_refuses_another_model(tiny_model_dir, tiny_loaded):
    texts = ["the man is playing a guitar .", "the stock market fell today", "a very good movie , not bad",
             "hello world", "someone is strumming a guitar"]
    cfg = EncoderConfig(model=str(tiny_model_dir), layers="last")
    fx = FeatureExtractor(tiny_loaded, cfg)
    spec = build_spec(cfg, fx)
    codes = spec.encode_features(fx.features(texts).values)
    index = CodeIndex(pa.array([f"t{i}" for i in range(5)]), codes, spec, model=str(tiny_model_dir))
    out = index.search(["hello world", "the stock market fell today"], k=5).to_pydict()
    assert out["query"] == [0] * 5 + [1] * 5 and out["rank"] == [1, 2, 3, 4, 5] * 2
    for q, own in ((0, "t3"), (1, "t1")):
        rows = [(d, i) for qq, d, i in zip(out["query"], out["hamming"], out["id"]) if qq == q]
        assert rows == sorted(rows) and (0, own) in rows          # the text itself at distance 0, ties by id
    sims = dict(zip(zip(out["query"], out["id"]), out["similarity"]))
    assert sims[(0, "t3")] == 1.0
    # The query encoder is built from the table's spec; a model other than the one that made the table is refused.
    other = CodeIndex(pa.array([f"t{i}" for i in range(5)]), codes,
                      spec.replace(model={"name": "other", "sha256": "1" * 64}), model=str(tiny_model_dir))
    with pytest.raises(SpecMismatchError, match="model"):
        other.search(["hello"])
