"""One decision rule: the labels in the predictions table are the labels the report's metrics were computed from."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from encoder.spec import FeatureSpec
from heads.data import Chunk
from heads.fitted import FittedHead, decide, sigmoid
from heads.modules import Head
from heads.inputs import head_inputs
from heads.predict import predict_batch, predictions_schema
from heads.score import FusedScorer
from heads.tasks import TaskConfig
from heads.train import TrainConfig, evaluate, train_heads

DIM = 32


def spec(q="binary") -> FeatureSpec:
    return FeatureSpec.of(model={"name": "m", "sha256": "0" * 64}, layers=(6,), layer_combine="concat", pooling="mean",
                       normalize=True, max_length=256, quantization=q, threshold_mode="zero", dim=DIM)


def test_probability_exactly_at_the_threshold_counts_as_on():
    z = np.array([[0.0], [-1e-3], [1e-3], [-1e-8]], np.float32)   # -1e-8: float32 probability rounds to 0.5
    assert decide("binary", z, np.array([0.5], np.float32)).classes.tolist() == [1, 0, 1, 1]
    t = sigmoid(np.float32(0.8))
    d = decide("multilabel", np.array([[0.8, 0.8]], np.float32), np.array([t, np.nextafter(t, np.float32(1))]))
    assert d.classes.tolist() == [[True, False]]


def test_predictions_table_labels_equal_the_metrics_labels():
    s = spec()
    rng = np.random.default_rng(0)
    n = 600
    codes = s.encode_features(rng.normal(size=(n, DIM)).astype(np.float32))
    x = head_inputs(s, codes)
    ids = np.array([f"r{i}" for i in range(n)])
    labels = {"a": (x[:, 0] > 0).astype(np.int64), "b": (x[:, 1] > 0).astype(np.int64),
              "c": ((x[:, 2] > 0).astype(np.int64) + (x[:, 3] > 0))}
    tasks = [TaskConfig("flag", "binary", ("a",)), TaskConfig("tags", "multilabel", ("a", "b")),
             TaskConfig("topic", "multiclass", ("c",), head="mlp", hidden=8)]

    def source():
        yield Chunk(ids, x, labels, np.arange(n) % 4 == 0)
    heads = train_heads(source, tasks, DIM, TrainConfig(epochs=3, lr=1e-2))
    flag, tags, topic = heads
    # Put rows exactly on the thresholds: zero weights, bias whose probability is the threshold itself.
    with torch.no_grad():
        flag.module.out.weight.zero_()
        flag.module.out.bias.fill_(0.0)                      # p = 0.5 exactly for every row
        tags.module.out.weight[1].zero_()
        tags.module.out.bias[1] = 0.3
    tags.thresholds = [0.5, float(sigmoid(np.float32(0.3)))]  # label b: every row exactly at its threshold
    val = Chunk(ids, x, labels, np.ones(n, bool))
    batch = pa.RecordBatch.from_arrays([pa.array(ids.tolist()), pa.array([c.tobytes() for c in codes], pa.binary())],
                                       ["id", "embedding"])
    table = predict_batch(batch, FusedScorer(heads, s), predictions_schema(heads)).to_pydict()
    for h in heads:
        _, pred = evaluate(h, val)
        if h.task.kind == "multilabel":
            want = [[h.labels[j] for j in np.flatnonzero(row)] for row in pred]
        else:
            want = [h.labels[i] for i in pred]
        assert table[h.task.name] == want, h.task.name
    assert set(table["flag"]) == {flag.labels[1]}              # at the threshold = the positive label
    assert all("b" in names for names in table["tags"])


@pytest.mark.parametrize("q", ["int8", "fp16", "fp32"])
def test_heads_see_one_scale_whatever_the_quantization(q):
    """Normalised features decode to about ±1/sqrt(dim); heads get them on unit scale, from the spec alone."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    s = spec(q) if q != "int8" else spec("fp32").replace(quantization="int8",
                                                        scales=(np.abs(x).max(0) / 127).astype(np.float32))
    h = head_inputs(s, s.encode_features(x))
    assert 0.8 < float(np.sqrt((h ** 2).mean())) < 1.2
    # The factor is the spec's, not the batch's: any slice of rows gets the same values.
    np.testing.assert_array_equal(head_inputs(s, s.encode_features(x[:7])), h[:7])
    # Training readers and the fused scorer feed heads the same inputs.
    head = FittedHead(TaskConfig("t", "binary", ("y",)), Head(DIM, 1), ["0", "1"])
    codes = s.encode_features(x[:300])
    np.testing.assert_allclose(FusedScorer([head], s).logits(codes)[0], head.logits(h[:300]), rtol=1e-5, atol=1e-5)
