import numpy as np

from encoder.batching import plan_batches, restore_order, unique_texts


def test_plan_covers_every_row_once_within_budget():
    lengths = np.random.default_rng(0).integers(1, 300, size=500)
    batches = plan_batches(lengths, token_budget=1024, max_rows=64)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(500))
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * lengths[b].max() <= 1024


def test_long_row_gets_its_own_batch():
    batches = plan_batches([5, 5000, 5], token_budget=100)
    assert [b.tolist() for b in batches] == [[0, 2], [1]]


def test_restore_order_inverts_the_plan():
    lengths = [30, 1, 20, 2, 10]
    batches = plan_batches(lengths, token_budget=40)
    parts = [np.array([[lengths[i]] for i in b]) for b in batches]
    assert restore_order(parts, batches, 5)[:, 0].tolist() == lengths


def test_unique_texts_folds_duplicates():
    uniq, inv = unique_texts(["a", "b", "a", "c", "b"])
    assert uniq == ["a", "b", "c"]
    assert [uniq[i] for i in inv] == ["a", "b", "a", "c", "b"]


def test_batches_never_mix_token_lengths():
    lengths = np.random.default_rng(1).integers(1, 40, size=400)
    for b in plan_batches(lengths, token_budget=512, max_rows=32):
        assert len(set(lengths[b].tolist())) == 1
