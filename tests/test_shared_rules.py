"""Rules that used to exist twice (and had started to disagree), each pinned where every caller now reads it."""
from __future__ import annotations

import ast
import hashlib

import numpy as np
import pyarrow as pa
import pytest

from encoder.hashing import file_sha256, id_bucket, id_hash
from encoder.quantize import codes_from_column, codes_to_column
from encoder.schema import QUARANTINE_REASONS, quarantine_reason
from encoder.typed_config import ConfigError, require_at_least
from heads.data import SplitRule, assign_splits
from heads.tasks import TaskConfig, check_tasks

from .conftest import ROOT

IDS = ["eczbrwg", "a", "", "ünïcode", "15998", "x" * 300] + [f"row{i}" for i in range(200)]


def test_the_split_rule_is_a_sha256_prefix_of_the_id_as_text():
    want = [int(hashlib.sha256(str(i).encode()).hexdigest()[:8], 16) for i in IDS]
    assert id_hash(IDS).tolist() == want
    assert id_bucket(IDS).tolist() == [w % 100 for w in want]
    assert id_hash([7, 15998]).tolist() == id_hash(["7", "15998"]).tolist()   # integer ids hash as their digits
    # train_heads' hash split takes exactly the ids whose bucket is below val_percent
    is_val, _ = assign_splits(IDS, None, SplitRule(column=None, val_percent=30))
    assert is_val.tolist() == (id_bucket(IDS) < 30).tolist() and 0 < is_val.sum() < len(IDS)


def test_spark_computes_the_same_id_hash_as_python(spark):
    """train_encoder and the embed job's calibration sample hash ids in Spark; train_heads in Python: one rule."""
    from pyspark.sql import functions as F

    from jobs.tables import id_bucket_column, id_hash_column

    df = spark.createDataFrame([(i,) for i in IDS], "id string")
    rows = df.select("id", id_hash_column(F.col("id")).alias("h"), id_bucket_column(F.col("id")).alias("b")).collect()
    got = {r["id"]: (r["h"], r["b"]) for r in rows}
    assert [got[i] for i in IDS] == list(zip(id_hash(IDS).tolist(), id_bucket(IDS).tolist()))
    ints = spark.createDataFrame([(7,), (15998,)], "id long").select(id_hash_column(F.col("id")).alias("h"))
    assert [r["h"] for r in ints.collect()] == id_hash([7, 15998]).tolist()


def test_codes_to_column_is_the_inverse_of_codes_from_column():
    codes = np.random.default_rng(0).integers(0, 256, (37, 48), dtype=np.uint8)
    col = codes_to_column(codes)
    assert col.type == pa.binary() and len(col) == 37 and col[3].as_py() == codes[3].tobytes()
    assert np.array_equal(codes_from_column(col, 48), codes)
    assert np.array_equal(codes_from_column(col.slice(5, 10), 48), codes[5:15])


def test_file_sha256_is_the_files_sha256(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc" * 700_000)                       # over one 1 MiB read block
    assert file_sha256(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_the_reader_names_quarantine_reasons_only_through_the_checked_helper():
    assert quarantine_reason("empty_text") == "empty_text"
    with pytest.raises(ValueError, match="expected one of 'null_id'"):
        quarantine_reason("blank_text")  # type: ignore[arg-type]
    tree = ast.parse((ROOT / "jobs" / "ingest.py").read_text(encoding="utf-8"))
    named = [n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") ==
             "_reason" and isinstance(n.args[0], ast.Constant)]
    assert set(named) <= set(QUARANTINE_REASONS) and len(set(named)) >= 7
    bare = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in QUARANTINE_REASONS]
    assert sorted(bare) == sorted(named)            # no reason spelled anywhere else in the reader


def test_every_input_format_has_all_its_readers():
    from typing import get_args

    from jobs.ingest import FORMATS, Format

    assert set(FORMATS) == set(get_args(Format))
    assert all(f.typed and f.corpus and "{path}" in f.duckdb for f in FORMATS.values())


def test_one_task_list_check_for_both_trainers():
    t = TaskConfig(name="s", kind="binary", columns=("label",))
    check_tasks([t], "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml: tasks names \['s'\] more than once"):
        check_tasks([t, t], "x.yaml")
    with pytest.raises(ConfigError, match="tasks is empty"):
        check_tasks([], "x.yaml")


def test_the_lower_bound_check_names_the_key():
    from tuning.config import MultiTaskConfig

    with pytest.raises(ConfigError, match=r"c.yaml: training.patience = 0; expected >= 1"):
        require_at_least(MultiTaskConfig(patience=0), ("max_steps", "patience"), 1, "c.yaml", "training.")
    with pytest.raises(ConfigError, match=r"training.keep_general = -1.0; expected >= 0"):
        MultiTaskConfig(keep_general=-1.0).validate("c.yaml", "training.")
