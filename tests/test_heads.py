"""heads/: save/load, spec checks, fused == one-by-one scoring, label masking, both readers."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from encoder.spec import FeatureSpec, SpecMismatchError
from heads.data import Chunk, SplitRule, arrow_source, petastorm_source
from heads.io import load_head, load_heads, save_head
from heads.predict import predict_batch, predictions_schema
from heads.score import FusedScorer, score_one_by_one
from heads.tasks import TaskConfig
from heads.train import TrainConfig, train_heads

DIM = 64


def spec(quantization="binary", **kw) -> FeatureSpec:
    scales = np.full(DIM, 0.01, np.float32) if quantization == "int8" else None
    return FeatureSpec.of(model={"name": "m", "sha256": "0" * 64}, layers=(6,), layer_combine="concat", pooling="mean",
                       normalize=True, max_length=256, quantization=quantization, threshold_mode="zero", dim=DIM,
                       scales=scales, **kw)


TASKS = [TaskConfig("topic", "multiclass", ("topic",), labels=("a", "b", "c")),
         TaskConfig("flag", "binary", ("flag",), head="mlp", hidden=16),
         TaskConfig("tags", "multilabel", ("t0", "t1", "t2"), head="linear"),
         TaskConfig("deep", "multiclass", ("topic",), head="mlp", hidden=8, class_weights=True)]


def synthetic(n=1200, seed=0):
    """Labels that depend on the sign pattern, so heads can learn them."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.normal(size=(n, DIM)) > 0, 1.0, -1.0).astype(np.float32)
    labels = {"topic": (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0), "flag": (x[:, 2] > 0).astype(np.int64),
              "t0": (x[:, 3] > 0).astype(np.int64), "t1": (x[:, 4] > 0).astype(np.int64),
              "t2": (x[:, 5] * x[:, 6] > 0).astype(np.int64)}
    ids = np.array([f"r{i:05d}" for i in range(n)])
    return ids, x, labels


def source_of(ids, x, labels, chunk=300):
    is_val = np.array([int(i[1:]) % 5 == 0 for i in ids])

    def chunks():
        for s in range(0, len(ids), chunk):
            sl = slice(s, s + chunk)
            yield Chunk(ids[sl], x[sl], {k: v[sl] for k, v in labels.items()}, is_val[sl])
    return chunks


CFG = TrainConfig(epochs=12, patience=3, batch_rows=64, lr=2e-2)


@pytest.fixture(scope="module")
def trained():
    ids, x, labels = synthetic()
    return train_heads(source_of(ids, x, labels), TASKS, DIM, CFG)


def test_heads_learn_and_beat_majority(trained):
    by = {h.task.name: h.metrics for h in trained}
    assert by["topic"]["accuracy"] > by["topic"]["majority_accuracy"] + 0.2
    assert by["flag"]["accuracy"] > 0.9
    assert by["tags"]["macro_f1"] > by["tags"]["majority_macro_f1"]
    assert set(by["tags"]["per_label_f1"]) == {"t0", "t1", "t2"}


def test_training_is_deterministic_and_independent_of_chunking():
    ids, x, labels = synthetic(600)
    a = train_heads(source_of(ids, x, labels, chunk=100), TASKS[:2], DIM, CFG)
    b = train_heads(source_of(ids, x, labels, chunk=250), TASKS[:2], DIM, CFG)
    for ha, hb in zip(a, b):
        for (k, va), (_, vb) in zip(ha.module.state_dict().items(), hb.module.state_dict().items()):
            torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


def test_one_pass_equals_separate_trainings():
    ids, x, labels = synthetic(600)
    together = train_heads(source_of(ids, x, labels), TASKS, DIM, CFG)
    for i in (0, 2):
        alone = train_heads(source_of(ids, x, labels), [TASKS[i]], DIM, CFG)[0]
        for k, v in alone.module.state_dict().items():
            torch.testing.assert_close(together[i].module.state_dict()[k], v, rtol=0, atol=0)


def test_rows_with_missing_labels_are_ignored_by_that_task_only():
    ids, x, labels = synthetic(600)
    labels["flag"] = labels["flag"].copy()
    hidden = np.arange(len(ids)) % 3 == 0
    labels["flag"][hidden] = -1
    tasks = [TaskConfig("flag", "binary", ("flag",)), TaskConfig("tags", "multilabel", ("t0", "t1", "t2"))]
    a = train_heads(source_of(ids, x, labels), tasks, DIM, CFG)
    # Whatever the unlabelled rows look like, the 'flag' head must come out the same.
    x2 = x.copy()
    x2[hidden] = -x2[hidden]
    b = train_heads(source_of(ids, x2, labels), tasks[:1], DIM, CFG)
    torch.testing.assert_close(a[0].module.out.weight, b[0].module.out.weight, rtol=0, atol=0)
    is_val = np.array([int(i[1:]) % 5 == 0 for i in ids])
    assert a[0].metrics["train_rows"] == int((~hidden & ~is_val).sum())
    assert a[1].metrics["train_rows"] == int((~is_val).sum())  # 'tags' still trains on every row


def test_multilabel_loss_has_no_gradient_on_unknown_entries():
    from heads.train import _loss_fn

    task = TaskConfig("tags", "multilabel", ("t0", "t1", "t2"))
    loss = _loss_fn(task, np.ones((2, 3)), 3)
    logits = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([[1, -1, 0], [0, 1, -1], [-1, -1, -1], [1, 1, 1]])
    total, count = loss(logits, y, y != -1)
    total.backward()
    assert count == 7
    assert torch.all(logits.grad[y == -1] == 0) and torch.all(logits.grad[y != -1] != 0)


def test_a_missing_label_is_not_treated_as_a_class():
    ids, x, labels = synthetic(600)
    noisy = {k: v.copy() for k, v in labels.items()}
    noisy["topic"][::2] = -1
    head = train_heads(source_of(ids, x, noisy), [TaskConfig("topic", "multiclass", ("topic",))], DIM, CFG)[0]
    assert head.module.n_outputs == 3 and head.labels == ["0", "1", "2"]


@pytest.mark.parametrize("q", ["binary", "int8", "fp16"])
def test_fused_scoring_equals_one_by_one(trained, q):
    s = spec(q)
    rng = np.random.default_rng(1)
    codes = s.encode_features(rng.normal(size=(257, DIM)).astype(np.float32))
    fused = FusedScorer(trained, s).logits(codes)
    single = score_one_by_one(trained, s, codes)
    for f, o in zip(fused, single):
        np.testing.assert_allclose(f, o, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip_gives_identical_outputs(trained, tmp_path):
    s = spec()
    for h in trained:
        save_head(tmp_path / h.task.name, h, s)
    loaded = load_heads(tmp_path, s)
    assert [h.task.name for h in loaded] == sorted(h.task.name for h in trained)
    codes = s.encode_features(np.random.default_rng(3).normal(size=(50, DIM)).astype(np.float32))
    before = dict(zip([h.task.name for h in trained], score_one_by_one(trained, s, codes)))
    after = dict(zip([h.task.name for h in loaded], score_one_by_one(loaded, s, codes)))
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))


def test_head_of_another_spec_is_refused(trained, tmp_path):
    save_head(tmp_path / "topic", trained[0], spec())
    other = spec("fp16")
    with pytest.raises(SpecMismatchError, match="not comparable"):
        load_head(tmp_path / "topic", other)
    loaded = load_head(tmp_path / "topic")
    with pytest.raises(SpecMismatchError):
        FusedScorer([loaded], other)


def test_predictions_batch_schema_and_labels(trained):
    s = spec()
    codes = s.encode_features(np.random.default_rng(4).normal(size=(20, DIM)).astype(np.float32))
    batch = pa.RecordBatch.from_arrays([pa.array([f"i{i}" for i in range(20)]),
                                        pa.array([c.tobytes() for c in codes], pa.binary()),
                                        pa.array([i % 3 for i in range(20)])], ["id", "embedding", "day"])
    schema = predictions_schema(trained, passthrough=pa.schema([("day", pa.int64())]))
    out = predict_batch(batch, FusedScorer(trained, s), schema).to_pydict()
    assert out["id"] == [f"i{i}" for i in range(20)] and out["day"] == [i % 3 for i in range(20)]
    assert schema.names[:3] == ["id", "day", trained[0].task.name]
    assert set(out["topic"]) <= {"a", "b", "c"} and all(0.33 <= p <= 1 for p in out["topic_score"])
    # multi-label scores carry their label names; the binary head's positive score is P(second label)
    assert all(list(v) == ["t0", "t1", "t2"] for v in out["tags_scores"])
    flag = next(h for h in trained if h.task.name == "flag")
    assert schema.field("flag_positive_score").metadata == {b"positive_label": flag.labels[1].encode()}
    for label, chosen, pos in zip(out["flag"], out["flag_score"], out["flag_positive_score"]):
        assert chosen == (pos if label == flag.labels[1] else np.float32(1) - np.float32(pos))
    thresholds = next(h for h in trained if h.task.name == "tags").thresholds
    assert thresholds is not None and len(thresholds) == 3
    for names, probs in zip(out["tags"], out["tags_scores"]):
        assert names == [n for n, t in zip(["t0", "t1", "t2"], thresholds) if probs[n] >= np.float32(t)]
    with pytest.raises(ValueError, match="'flag_score'"):
        predictions_schema(trained, passthrough=pa.schema([("flag_score", pa.int64())]))


def test_petastorm_reader_returns_every_row_once_and_matches_pyarrow(tmp_path):
    s = spec()
    ids, x, labels = synthetic(2000, seed=5)
    codes = s.encode_features(x)
    table = pa.table({"id": ids.tolist(), "embedding": pa.array([c.tobytes() for c in codes], pa.binary()),
                      **{k: pa.array(v, pa.int64()) for k, v in labels.items()},
                      "split": ["validation" if i % 5 == 0 else "train" for i in range(2000)]})
    d = tmp_path / "joined"
    d.mkdir()
    pq.write_table(table.slice(0, 1100), d / "part-00000.parquet", row_group_size=100)   # 11 row groups
    pq.write_table(table.slice(1100), d / "part-00001.parquet", row_group_size=90)      # 10 row groups
    cols = list(labels)
    pa_src = arrow_source(d, s, cols, SplitRule("split"))
    ps_src = petastorm_source(d, s, cols, SplitRule("split"))
    got = np.concatenate([c.ids for c in ps_src()])
    assert len(got) == 2000 and sorted(got.tolist()) == sorted(ids.tolist())  # every row, exactly once
    a = train_heads(pa_src, TASKS[:2], DIM, CFG)
    b = train_heads(ps_src, TASKS[:2], DIM, CFG)
    for ha, hb in zip(a, b):
        for k, v in ha.module.state_dict().items():
            torch.testing.assert_close(v, hb.module.state_dict()[k], rtol=0, atol=0)


def test_byte_table_and_product_paths_give_the_same_logits(trained, monkeypatch):
    """Binary codes: few outputs go through per-byte tables, many through the matrix product; both equal the heads."""
    s = spec()
    codes = s.encode_features(np.random.default_rng(7).normal(size=(9000, DIM)).astype(np.float32))  # 2 chunks
    single = score_one_by_one(trained, s, codes)
    tables = FusedScorer(trained, s)
    assert tables.lut is not None
    monkeypatch.setattr(FusedScorer, "LUT_MAX_OUTPUTS", 0)
    product = FusedScorer(trained, s)
    assert product.lut is None
    for a, b, o in zip(tables.logits(codes), product.logits(codes), single):
        np.testing.assert_allclose(a, o, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b, o, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quantization", ["binary", "fp32"])
def test_a_rows_scores_do_not_depend_on_its_batch(trained, quantization):
    """Bit-identical logits for a row scored in a batch of 9, 300 or 1 (MLP heads included): an incremental apply
    carries old scores, which must equal what a full apply computes."""
    s = spec(quantization)
    codes = s.encode_features(np.random.default_rng(9).normal(size=(300, DIM)).astype(np.float32))
    scorer = FusedScorer(trained, s)
    full = scorer.logits_array(codes)
    for a, b in ((0, 9), (5, 300), (100, 101), (37, 250)):
        np.testing.assert_array_equal(scorer.logits_array(codes[a:b]), full[a:b])
