"""Incremental embed runs: only new and changed texts are encoded, and the table equals a full run's on the same
input (ids, codes, every column, the files themselves)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encoder.spec import SpecMismatchError
from jobs import embed
from jobs.common import load_config

from .conftest import SAMPLE

pytestmark = pytest.mark.spark


def cfg(out: Path, src: Path, *more: str):
    return load_config(embed.EmbedConfig, "conf/embed.yaml", [f"input.path={src}", f"output.path={out}",
                                                              "input.passthrough=[split]", *more])


def files(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("days")
    t = pq.read_table(SAMPLE, columns=["id", "text", "split"]).slice(0, 303).to_pydict()
    day1 = {k: v[:300] for k, v in t.items()}
    day2 = {k: list(v) for k, v in t.items()}
    for i in range(10, 16):                       # 6 changed texts
        day2["text"][i] += " (edited)"
    day2["split"][20] = "test"                    # a passthrough value changes, the text does not
    for k in day2:                                # 3 ids deleted; rows 300..302 are new
        day2[k] = day2[k][3:]
    pq.write_table(pa.table(day1), d / "day1.parquet")
    pq.write_table(pa.table(day2), d / "day2.parquet")
    return d / "day1.parquet", d / "day2.parquet"


def test_incremental_run_equals_a_full_run_and_encodes_only_what_changed(spark, tmp_path, days):
    day1, day2 = days
    nightly = tmp_path / "nightly"
    first = embed.run(cfg(nightly, day1))
    assert "incremental" not in first                                    # no base yet: a full run
    m = embed.run(cfg(nightly, day2))
    assert m["incremental"] == {"parent_run": first["run_id"], "new": 3, "changed": 6, "unchanged": 291,
                                "deleted": 3, "kept": 0, "encoded": 9}
    full = embed.run(cfg(tmp_path / "full", day2, "output.mode=full"))
    assert "incremental" not in full and m["rows"] == full["rows"]
    a = pq.read_table(nightly / "embeddings").sort_by("id")
    b = pq.read_table(tmp_path / "full" / "embeddings").sort_by("id")
    assert a.equals(b)                                                   # ids, codes, hashes, passthrough
    assert files(nightly / "embeddings") == files(tmp_path / "full" / "embeddings")
    split = dict(zip(a.column("id").to_pylist(), a.column("split").to_pylist()))
    assert split[pq.read_table(day2).column("id")[17].as_py()] == "test"    # today's passthrough value


def test_deleted_ids_can_be_kept_and_another_spec_is_refused(spark, tmp_path, days):
    day1, day2 = days
    out = tmp_path / "keep"
    embed.run(cfg(out, day1))
    m = embed.run(cfg(out, day2, "output.deletions=keep"))
    assert m["incremental"]["kept"] == 3 and m["rows"]["written"] == 303
    ids = set(pq.read_table(out / "embeddings").column("id").to_pylist())
    assert set(pq.read_table(day1).column("id").to_pylist()) <= ids
    before = out.resolve()
    with pytest.raises(SpecMismatchError, match="output.mode=full"):
        embed.run(cfg(out, day2, "encoder.layers=last"))
    assert out.resolve() == before


def test_spark_text_hash_equals_python_hashlib(spark):
    from pyspark.sql import functions as F

    texts = ["plain", "ünïcödé ✓", "emoji 😂😂", " spaced ", "line\nbreak", "ç" * 1000]
    got = spark.createDataFrame([(t,) for t in texts], "t string").select(embed.text_hash(F.col("t")).alias("h"))
    assert [r["h"] for r in got.collect()] == [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]


def test_incremental_apply_rescores_only_changed_codes_and_equals_a_full_apply(spark, tmp_path, days, pipeline):
    from jobs import apply_heads

    day1, day2 = days
    emb, pred = tmp_path / "emb", tmp_path / "pred"

    def apply(out, *more):
        return apply_heads.run(load_config(apply_heads.ApplyHeadsConfig, "conf/apply_heads.yaml", [
            f"embeddings={emb}", f"heads={pipeline['heads']}", f"output.path={out}", *more]))

    embed.run(cfg(emb, day1))
    assert "incremental" not in apply(pred)
    embed.run(cfg(emb, day2))
    m = apply(pred)
    assert m["incremental"]["rescored"] == 3 + 6 and m["incremental"]["carried"] == 291
    full = apply(tmp_path / "full", "mode=full")
    assert "incremental" not in full
    a = pq.read_table(pred / "predictions").sort_by("id")
    b = pq.read_table(tmp_path / "full" / "predictions").sort_by("id")
    assert a.schema == b.schema and a.equals(b)
    assert files(pred / "predictions") == files(tmp_path / "full" / "predictions")
    # other heads (a different fingerprint): everything is scored again
    other = tmp_path / "heads2"
    import shutil

    shutil.copytree(pipeline["heads"], other)
    (other / "neutral" / "head.json").write_text((other / "neutral" / "head.json").read_text() + " ")
    m = apply_heads.run(load_config(apply_heads.ApplyHeadsConfig, "conf/apply_heads.yaml", [
        f"embeddings={emb}", f"heads={other}", f"output.path={pred}"]))
    assert "incremental" not in m


@pytest.mark.parametrize("setting, named", [
    ("encoder.quantization=int8", "encoder.quantization = 'int8' but the published table"),      # calibrated
    ("encoder.thresholds=calibrated", "encoder.thresholds = 'calibrated' but the published table"),  # calibrated
    ("encoder.quantization=fp16", "differs in quantization"),                                 # no calibration
])
def test_a_code_setting_change_over_the_base_is_exit_5_naming_the_setting(spark, tmp_path, tiny_model_dir, capsys,
                                                                          setting, named):
    """An incremental run whose spec must be calibrated reused the base's spec after comparing only the feature
    part: int8 over a binary table exited 0 and published a binary table. Every code setting is compared now."""
    src = tmp_path / "in.parquet"
    pq.write_table(pq.read_table(SAMPLE, columns=["id", "text", "split"]).slice(0, 40), src)
    args = ["--config", "conf/embed.yaml", "--set", f"input.path={src}", "--set", f"output.path={tmp_path / 'out'}",
            "--set", f"encoder.model={tiny_model_dir}", "--set", "encoder.layers=all", "--set",
            "encoder.calibration_rows=20"]
    assert embed.main(args) == 0
    before = (tmp_path / "out").resolve()
    capsys.readouterr()
    assert embed.main(args + ["--set", setting]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SpecMismatchError" in err[0] and named in err[0], err
    assert (tmp_path / "out").resolve() == before                       # the published table is untouched


def test_an_incremental_run_on_a_rescoring_table_gives_the_full_runs_int8_column_byte_for_byte(spark, tmp_path,
                                                                                               days, capsys):
    """The base's spec (its rescore scales too) is reused; a full run given the same scales (thresholds_from) writes
    the same files; asking for another rescore setting than the base's is exit 5 naming output.rescore."""
    day1, day2 = days
    nightly = tmp_path / "nightly"
    more = ("output.rescore=int8", "encoder.calibration_rows=100")
    first = embed.run(cfg(nightly, day1, *more))
    m = embed.run(cfg(nightly, day2, *more))
    assert m["incremental"]["encoded"] == 9 and m["feature_spec"]["fingerprint"] == \
        first["feature_spec"]["fingerprint"]
    full = embed.run(cfg(tmp_path / "full", day2, *more, "output.mode=full",
                         f"encoder.thresholds_from={nightly / 'feature_spec.json'}"))
    assert full["feature_spec"]["fingerprint"] == m["feature_spec"]["fingerprint"]
    a = pq.read_table(nightly / "embeddings").sort_by("id")
    assert a.column_names[:3] == ["id", "embedding", "embedding_int8"]
    assert a.equals(pq.read_table(tmp_path / "full" / "embeddings").sort_by("id"))
    assert files(nightly / "embeddings") == files(tmp_path / "full" / "embeddings")
    before = nightly.resolve()
    capsys.readouterr()
    args = ["--config", "conf/embed.yaml", "--set", f"input.path={day2}", "--set", f"output.path={nightly}",
            "--set", "input.passthrough=[split]"]
    assert embed.main(args) == 5                                   # output.rescore: none over an int8 base
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SpecMismatchError" in err[0] and "rescore (output.rescore)" in err[0], err
    assert nightly.resolve() == before
