"""Label values, task columns and the head/training configs are checked at the edge, with errors that say where."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from encoder.spec import SpecMismatchError
from encoder.typed_config import ConfigError, build, load_yaml
from heads.data import Chunk, SplitRule, assign_splits
from heads.metrics import multilabel_metrics
from heads.tasks import HEAD_KINDS, TASK_KINDS, LabelError, TaskConfig, resolve_columns
from heads.train import TrainConfig, train_heads
from jobs.train_heads import TrainHeadsConfig

DIM = 8


def source_of(labels: dict, n: int = 200):
    rng = np.random.default_rng(0)
    x = np.where(rng.normal(size=(n, DIM)) > 0, 1.0, -1.0).astype(np.float32)
    ids = np.array([f"r{i}" for i in range(n)])

    def chunks():
        yield Chunk(ids, x, labels, np.arange(n) % 5 == 0)
    return chunks


@pytest.mark.parametrize("kind,labels,msg", [
    ("multiclass", ("a", "b", "c"), r"column 'y' holds 7 \(row id 'r13'\); expected 0..2 \(3 label names\)"),
    ("multiclass", (), r"column 'y' holds 7 \(row id 'r13'\) but never \[3, 4, 5, 6\]"),
    ("binary", (), r"column 'y' holds 7 \(row id 'r13'\); expected 0 or 1"),
])
def test_a_stray_label_value_is_an_error_naming_column_value_and_row(kind, labels, msg):
    y = np.arange(200) % (2 if kind == "binary" else 3)
    y[13] = 7
    with pytest.raises(LabelError, match=msg):
        train_heads(source_of({"y": y}), [TaskConfig("t", kind, ("y",), labels=labels)], DIM, TrainConfig(epochs=1))


def test_multilabel_values_must_be_zero_or_one():
    y = np.zeros(200, np.int64)
    y[40] = 2
    with pytest.raises(LabelError, match=r"column 'b' holds 2 \(row id 'r40'\)"):
        train_heads(source_of({"a": np.ones(200, np.int64), "b": y}),
                    [TaskConfig("t", "multilabel", ("a", "b"))], DIM, TrainConfig(epochs=1))


def test_glob_columns_expand_in_table_order_and_unknown_names_list_close_matches():
    cols = ["id", "topics__sport", "topics__art", "topics__war", "split"] + [f"c{i}" for i in range(600)]
    t = resolve_columns(TaskConfig("topics", "multilabel", ("topics__*",)), cols, "label table")
    assert t.columns == ("topics__sport", "topics__art", "topics__war")
    with pytest.raises(LabelError) as exc:
        resolve_columns(TaskConfig("x", "binary", ("topics__sprot",)), cols, "label table")
    assert "topics__sport" in str(exc.value) and "c599" not in str(exc.value)


def test_label_and_task_names_stay_strings_in_yaml():
    data = load_yaml("tasks: [{name: no, kind: binary, columns: [off], labels: [NOT, OFF]}]\nflag: true")
    assert data["tasks"][0]["labels"] == ["NOT", "OFF"] and data["tasks"][0]["name"] == "no"
    assert data["flag"] is True
    t = build(TaskConfig, data["tasks"][0], "x.yaml", "tasks[0].")
    assert t.labels == ("NOT", "OFF") and t.columns == ("off",)


@pytest.mark.parametrize("kind", TASK_KINDS)
@pytest.mark.parametrize("head", HEAD_KINDS)
def test_every_task_and_head_kind_builds(kind, head):
    t = build(TaskConfig, {"name": "t", "kind": kind, "columns": ["a"], "head": head}, "x", "")
    assert t.kind == kind and t.head == head


@pytest.mark.parametrize("data,key", [
    ({"name": "a b", "kind": "binary", "columns": ["y"]}, "name"),
    ({"name": "t", "kind": "binary", "columns": ["y", "z"]}, "columns"),
    ({"name": "t", "kind": "binary", "columns": ["y*"]}, "columns"),
    ({"name": "t", "kind": "binary", "columns": ["y"], "labels": ["a", "b", "c"]}, "labels"),
    ({"name": "t", "kind": "multilabel", "columns": ["y", "z"], "labels": ["a"]}, "labels"),
    ({"name": "t", "kind": "multiclass", "columns": ["y"], "labels": ["a", "a"]}, "labels"),
    ({"name": "t", "kind": "multiclass", "columns": ["y"], "hidden": 0}, "hidden"),
    ({"name": "t", "kind": "regression", "columns": ["y"]}, "kind"),
    ({"name": "t", "kind": "binary", "columns": ["y"], "head": "tree"}, "head"),
])
def test_task_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=rf"tasks\[0\]\.{key} "):
        build(TaskConfig, data, "x.yaml", "tasks[0].")


@pytest.mark.parametrize("data,key", [({"epochs": 0}, "epochs"), ({"patience": 0}, "patience"),
                                      ({"lr": 0.0}, "lr"), ({"weight_decay": -1.0}, "weight_decay"),
                                      ({"val_percent": 100}, "val_percent"), ({"batch_rows": 0}, "batch_rows")])
def test_train_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=rf"train\.{key} = "):
        build(TrainConfig, data, "x.yaml", "train.")


def test_train_heads_config_errors():
    base = {"embeddings": "e", "labels": {"path": "l"}, "tasks": [{"name": "t", "kind": "binary", "columns": ["y"]}]}
    assert build(TrainHeadsConfig, base, "x", "").reader == "auto"
    with pytest.raises(ConfigError, match="tasks names"):
        build(TrainHeadsConfig, base | {"tasks": base["tasks"] * 2}, "x", "")
    with pytest.raises(ConfigError, match=r"reader = 'pandas'"):
        build(TrainHeadsConfig, base | {"reader": "pandas"}, "x", "")
    with pytest.raises(ConfigError, match=r"labels\.format = 'xml'"):
        build(TrainHeadsConfig, base | {"labels": {"path": "l", "format": "xml"}}, "x", "")


def test_without_validation_rows_a_hash_of_the_id_picks_them():
    ids = np.array([f"id{i}" for i in range(1000)])
    split = np.array(["train"] * 800 + ["test"] * 200, dtype=object)
    val, test = assign_splits(ids, split, SplitRule("split", 10, hash_validation=False))
    assert not val.any() and test.sum() == 200
    val, test = assign_splits(ids, split, SplitRule("split", 10, hash_validation=True))
    assert 40 < val.sum() < 130 and not (val & test).any() and test.sum() == 200
    again, _ = assign_splits(ids[::-1], split[::-1], SplitRule("split", 10, hash_validation=True))
    assert (again[::-1] == val).all()   # by id, not by position


def test_macro_f1_averages_only_labels_with_a_positive():
    y = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 1], [0, 0, 0]])
    pred = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    m = multilabel_metrics(y, pred, np.ones_like(y, bool), ["a", "b", "c"])
    assert m["per_label_f1"] == {"a": 1.0, "b": None, "c": 0.0}
    assert m["scored_labels"] == 2 and m["macro_f1"] == pytest.approx(0.5)


def test_task_names_that_clash_with_prediction_columns_are_refused():
    base = {"embeddings": "e", "labels": {"path": "l"}}
    for tasks in ([{"name": "id", "kind": "binary", "columns": ["y"]}],
                  [{"name": "x", "kind": "binary", "columns": ["y"]},
                   {"name": "x_score", "kind": "binary", "columns": ["z"]}]):
        with pytest.raises(ConfigError, match="clash with the predictions table"):
            build(TrainHeadsConfig, base | {"tasks": tasks}, "x", "")


def _raise_in_task(batches, error: Exception):
    """A mapInArrow body that raises ``error`` on the executor once it has a batch."""
    for _ in batches:
        raise error
    yield from ()


@pytest.mark.parametrize("error,code", [
    (SpecMismatchError("feature spec abc does not match this encoder"), 5),
    (LabelError("column 'y' holds 7 (row id 'r13'); expected 0 or 1"), 3),
    (ZeroDivisionError("division by zero"), None)])
def test_known_errors_raised_on_executors_keep_their_exit_code(spark, error, code):
    """A real executor error: the Python worker raises, the driver gets Spark's PythonException, not the error."""
    from pyspark.errors import PythonException

    from jobs.errors import exit_code, one_line

    with pytest.raises(PythonException) as caught:
        spark.range(4, numPartitions=1).mapInArrow(partial(_raise_in_task, error=error), "id long").collect()
    exc = caught.value
    assert not isinstance(exc, type(error))
    assert exit_code(exc) == code
    if code is not None:
        assert one_line(exc) == f"{type(error).__name__}: {error}"
