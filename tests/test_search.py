"""Exact Hamming top-k and near-duplicates over packed codes: equal to brute force, ties broken by id, independent of
blocks and order; pigeonhole recall exactly 1.0."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from encoder.build_spec import build_spec
from encoder.encode import FeatureExtractor
from encoder.encoder_config import EncoderConfig
from encoder.features import FeatureSettings
from search.duplicates import candidate_pairs, near_duplicates, pigeonhole_blocks
from search.index import CodeIndex
from search.kernels import hamming, pair_hamming, rescore, top_k
from search.queries import QueryEncoder

from .oracles import brute_force_pairs
from encoder.spec import SpecMismatchError


def bits_distance(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (np.unpackbits(q, axis=1)[:, None, :] != np.unpackbits(c, axis=1)[None, :, :]).sum(axis=2)


@pytest.mark.parametrize("n_bytes", [1, 6, 48, 300])       # 300 bytes = 2400 bits: past fp16's exact integers
def test_hamming_equals_unpacked_bits(n_bytes):
    rng = np.random.default_rng(n_bytes)
    q = rng.integers(0, 256, (3, n_bytes), dtype=np.uint8)
    c = rng.integers(0, 256, (50, n_bytes), dtype=np.uint8)
    c[0], c[1] = q[0], ~q[1]                                        # distance 0 and the maximum
    want = bits_distance(q, c)
    np.testing.assert_array_equal(hamming(q, c), want)
    np.testing.assert_array_equal(pair_hamming(q, c[:3]), want[np.arange(3), np.arange(3)])


@pytest.mark.parametrize("block_rows", [7, 100, 10_000])
def test_top_k_equals_brute_force_with_ties_broken_by_row(block_rows):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (300, 1), dtype=np.uint8)           # 2 bits: nearly every distance is a tie
    queries = rng.integers(0, 256, (5, 1), dtype=np.uint8)
    rows, dist = top_k(queries, codes, 10, block_rows=block_rows, query_batch=2)
    d = bits_distance(queries, codes)
    for qi in range(5):
        want = sorted(range(300), key=lambda r: (d[qi, r], r))[:10]
        assert rows[qi].tolist() == want and dist[qi].tolist() == [d[qi, r] for r in want]


def test_top_k_on_random_48_byte_codes_equals_brute_force():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (3000, 48), dtype=np.uint8)
    codes[2000:2010] = codes[5]                                     # exact duplicates: ties at distance 0
    queries = np.concatenate([codes[[5, 17]], rng.integers(0, 256, (3, 48), dtype=np.uint8)])
    rows, dist = top_k(queries, codes, 15, block_rows=512)
    d = bits_distance(queries, codes)
    for qi in range(len(queries)):
        want = np.lexsort((np.arange(3000), d[qi]))[:15]
        assert rows[qi].tolist() == want.tolist()
    assert rows[0][:11].tolist() == [5] + list(range(2000, 2010))


def test_index_results_do_not_depend_on_corpus_order_and_ties_go_by_id():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (500, 6), dtype=np.uint8)
    codes[100:140] = codes[0]                                       # 41 identical codes
    ids = [f"r{rng.integers(0, 10**6):07d}-{i}" for i in range(500)]
    spec = _binary_spec(48)
    a = CodeIndex(pa.array(ids), codes, spec).search(codes[:3], k=20).to_pydict()
    perm = rng.permutation(500)
    b = CodeIndex(pa.array([ids[i] for i in perm]), codes[perm], spec).search(codes[:3], k=20).to_pydict()
    assert a == b
    tied = [i for q, i in zip(a["query"], a["id"]) if q == 0]
    assert tied == sorted(ids[i] for i in [0, *range(100, 140)])[:20]
    assert CodeIndex(pa.array(ids[:5]), codes[:5], spec).search(codes[:3], k=20).num_rows == 15   # k > corpus


def _binary_spec(dim: int):
    from encoder.spec import FeatureSpec

    return FeatureSpec.of(model={"name": "m", "sha256": "0" * 64}, layers=(5,), layer_combine="mean", pooling="mean",
                       normalize=True, max_length=16, dim=dim, quantization="binary", threshold_mode="zero")


@pytest.mark.parametrize("radius", [0, 3, 9])
def test_pigeonhole_finds_every_pair_within_radius(radius):
    """Recall exactly 1.0: codes planted at every distance up to radius + 2 from a few seeds, plus random ones."""
    rng = np.random.default_rng(radius)
    base = rng.integers(0, 256, (20, 12), dtype=np.uint8)          # 96 bits: radius 9 gives 10 blocks of 9-10 bits
    planted = [base]
    for flips in range(0, radius + 3):
        c = base.copy()
        bits = np.unpackbits(c, axis=1)
        for row in bits:
            row[rng.choice(96, flips, replace=False)] ^= 1
        planted.append(np.packbits(bits, axis=1))
    codes = np.concatenate(planted + [rng.integers(0, 256, (200, 12), dtype=np.uint8)])
    pairs, d = near_duplicates(codes, radius)
    want_pairs, want_d = brute_force_pairs(codes, radius)
    assert len(want_pairs) >= 20 * (radius + 1)
    np.testing.assert_array_equal(pairs, want_pairs)
    np.testing.assert_array_equal(d, want_d)
    assert (pairs[:, 0] < pairs[:, 1]).all() and len(np.unique(pairs, axis=0)) == len(pairs)
    assert len(candidate_pairs(codes, radius)) < len(codes) * (len(codes) - 1) // 2     # not all pairs compared


def test_pigeonhole_blocks_cover_the_code_and_refuse_a_radius_too_large():
    blocks = pigeonhole_blocks(384, 24)
    assert len(blocks) == 25 and blocks[0][0] == 0 and blocks[-1][1] == 384
    assert all(15 <= b - a <= 16 for a, b in blocks) and all(blocks[i][1] == blocks[i + 1][0] for i in range(24))
    with pytest.raises(ValueError, match="radius = 48; expected 0..47"):
        pigeonhole_blocks(384, 48)


def test_rescore_orders_candidates_by_cosine():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    q = vectors[[3]] + 0.01
    rows, cos = rescore(q, np.array([[10, 3, 20, 30]]), vectors, 2)
    assert rows[0, 0] == 3 and cos[0, 0] > 0.99 and cos[0, 0] >= cos[0, 1]


def test_code_index_finds_the_text_itself_and_refuses_another_model(tiny_model_dir, tiny_loaded):
    texts = ["the man is playing a guitar .", "the stock market fell today", "a very good movie , not bad",
             "hello world", "someone is strumming a guitar"]
    cfg = EncoderConfig(model=str(tiny_model_dir), features=FeatureSettings(layers="last"))
    fx = FeatureExtractor(tiny_loaded, cfg)
    spec = build_spec(cfg, fx)
    codes = spec.encode_features(fx.features(texts).values)
    index = CodeIndex(pa.array([f"t{i}" for i in range(5)]), codes, spec, QueryEncoder(spec, str(tiny_model_dir)))
    out = index.search(["hello world", "the stock market fell today"], k=5).to_pydict()
    assert out["query"] == [0] * 5 + [1] * 5 and out["rank"] == [1, 2, 3, 4, 5] * 2
    for q, own in ((0, "t3"), (1, "t1")):
        rows = [(d, i) for qq, d, i in zip(out["query"], out["hamming"], out["id"]) if qq == q]
        assert rows == sorted(rows) and (0, own) in rows          # the text itself at distance 0, ties by id
    sims = dict(zip(zip(out["query"], out["id"]), out["similarity"]))
    assert sims[(0, "t3")] == 1.0
    # The query encoder is built from the table's spec; a model other than the one that made the table is refused.
    with pytest.raises(SpecMismatchError, match="model"):
        QueryEncoder(spec.replace(model={"name": "other", "sha256": "1" * 64}), str(tiny_model_dir))


def test_first_shared_block_is_the_lowest_block_with_equal_keys():
    from search.duplicates import block_keys, first_shared_block

    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (400, 6), dtype=np.uint8)
    b = a.copy()
    bits = np.unpackbits(b, axis=1)
    for row in bits:
        row[rng.choice(48, rng.integers(0, 12), replace=False)] ^= 1
    b = np.packbits(bits, axis=1)
    blocks = pigeonhole_blocks(48, 5)
    ka, kb = block_keys(a, blocks), block_keys(b, blocks)
    equal = np.stack([x == y for x, y in zip(ka, kb)], axis=1)              # rows x blocks
    want = np.where(equal.any(axis=1), equal.argmax(axis=1), len(blocks))
    np.testing.assert_array_equal(first_shared_block(a, b, blocks), want)
    assert 0 < (want == len(blocks)).sum() < 400                             # both cases occur
