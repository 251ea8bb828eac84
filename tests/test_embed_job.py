"""End to end: the embed job with the real packaged model on local Spark, real Parquet in and out."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encoder.typed_config import ConfigError
from encoder.encode import FeatureExtractor
from encoder.quantize import unpack_signs
from encoder.schema import QUARANTINE_REASONS
from encoder.spec import FeatureSpec, SpecMismatchError
from encoder.table import spec_from_parquet
from jobs import embed
from jobs.common import load_config
from jobs.errors import InputError

from .conftest import SAMPLE, crash_after

pytestmark = pytest.mark.spark


def config(tmp_path: Path, input_path: Path, fmt: str = "parquet", *more: str):
    return load_config(embed.EmbedConfig, "conf/embed.yaml", [
        f"input.path={input_path}", f"input.format={fmt}", f"output.path={tmp_path / 'out' / 'emb'}",
        *(["input.passthrough=[split]"] if fmt == "parquet" else ["input.passthrough=[]"]), *more])


def file_hashes(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def sample_slice(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("in") / "slice.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 300), p)
    return p


def test_publishes_table_manifest_and_spec(spark, tmp_path, sample_slice, real_loaded):
    cfg = config(tmp_path, sample_slice)
    manifest = embed.run(cfg)
    out = Path(cfg.output.path)
    assert out.is_symlink() and (out / "manifest.json").is_file()
    assert manifest["rows"] == {"in": 300, "written": 300, "quarantined": 0, "truncated": 0}
    table = pq.read_table(out / "embeddings")
    assert table.column_names == ["id", "embedding", "text_sha256", "n_tokens", "truncated", "split"]
    spec = FeatureSpec.load(out)
    assert spec.features.layers == (3, 4, 5, 6) and spec.features.layer_combine == "mean"  # conf/embed.yaml
    assert spec.n_bytes == 48
    assert set(len(b) for b in table.column("embedding").to_pylist()) == {spec.n_bytes}
    part = sorted((out / "embeddings").glob("*.parquet"))[0]
    assert spec_from_parquet(part)["fingerprint"] == spec.fingerprint == manifest["feature_spec"]["fingerprint"]
    # The stored codes are what the in-process library computes for the same texts.
    src = pq.read_table(sample_slice).to_pydict()
    by_id = dict(zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()))
    codes = np.frombuffer(b"".join(by_id[i] for i in src["id"]), np.uint8).reshape(300, spec.n_bytes)
    fx = FeatureExtractor(real_loaded, cfg.encoder)
    expected = fx.encode(src["text"], spec).codes
    np.testing.assert_array_equal(codes, expected)   # batches hold one token length: no padding, no drift
    assert table.column("text_sha256").to_pylist()[0] == hashlib.sha256(
        src["text"][src["id"].index(table.column("id")[0].as_py())].encode()).hexdigest()


def test_rerun_gives_identical_files(spark, tmp_path, sample_slice):
    cfg = config(tmp_path, sample_slice, "parquet", "output.keep_runs=1")
    embed.run(cfg)
    out = Path(cfg.output.path)
    first_run, first = out.resolve(), file_hashes(out / "embeddings")
    embed.run(cfg)
    assert out.resolve() != first_run
    assert file_hashes(out / "embeddings") == first
    assert not first_run.exists()  # keep_runs=1 pruned the older run


def test_paraphrases_are_closer_in_hamming_distance(spark, tmp_path):
    rows = [("p1a", "A man is playing a guitar."), ("p1b", "Someone is strumming a guitar."),
            ("p2a", "The stock market fell sharply today."), ("p2b", "Share prices dropped steeply this afternoon."),
            ("p3a", "My cat sleeps on the sofa all day."), ("p3b", "The kitten naps on the couch from morning to night.")]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in rows))
    cfg = config(tmp_path, src, "jsonl")
    embed.run(cfg)
    t = pq.read_table(Path(cfg.output.path) / "embeddings").to_pydict()
    dim = FeatureSpec.load(cfg.output.path).dim
    bits = {i: unpack_signs(np.frombuffer(e, np.uint8)[None, :], dim)[0] for i, e in zip(t["id"], t["embedding"])}
    ham = lambda a, b: int((bits[a] != bits[b]).sum())  # noqa: E731
    for k in ("p1", "p2", "p3"):
        pair = ham(f"{k}a", f"{k}b")
        others = [ham(f"{k}a", f"{o}b") for o in ("p1", "p2", "p3") if o != k]
        assert pair < min(others), (k, pair, others)


def test_every_bad_input_class_is_quarantined_and_counts_balance(spark, tmp_path):
    long_text = " ".join(["word"] * 400)
    lines = [
        json.dumps({"id": "ok1", "text": "A perfectly fine sentence."}),
        json.dumps({"id": "ok2", "text": long_text}),
        json.dumps({"id": None, "text": "no id"}),
        json.dumps({"id": "dup", "text": "first copy"}),
        json.dumps({"id": "dup", "text": "second copy"}),
        json.dumps({"id": "nt", "text": None}),
        json.dumps({"id": "missing"}),
        json.dumps({"id": "empty", "text": "  \t\n "}),
        json.dumps({"id": "num", "text": 5}),
        json.dumps({"id": "list", "text": ["a", "b"]}),
        "{this is not json",
        "",
    ]
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(lines) + "\n")
    cfg = config(tmp_path, src, "jsonl", "output.max_quarantine_fraction=1.0")
    manifest = embed.run(cfg)
    out = Path(cfg.output.path)
    assert manifest["rows"] == {"in": 11, "written": 2, "quarantined": 9, "truncated": 1}
    q = pq.read_table(out / "quarantine").to_pydict()
    got = sorted(zip(q["id"], q["reason"]), key=str)
    assert got == sorted([(None, "null_id"), ("dup", "duplicate_id"), ("dup", "duplicate_id"), ("nt", "null_text"),
                          ("missing", "null_text"), ("empty", "empty_text"), ("num", "text_not_string"),
                          ("list", "text_not_string"), (None, "malformed_record")], key=str)
    assert set(q["reason"]) <= set(QUARANTINE_REASONS)
    assert "{this is not json" in q["source"]
    emb = pq.read_table(out / "embeddings").to_pydict()
    row = dict(zip(emb["id"], zip(emb["n_tokens"], emb["truncated"])))
    assert row["ok2"][1] is True and row["ok2"][0] == 402 and row["ok1"][1] is False


def test_csv_and_parquet_faults(spark, tmp_path):
    csv = tmp_path / "in.csv"
    csv.write_text('id,text\n1,hello there\n2,"a, quoted, text"\n3,too,many,fields\n4,\n,no id\n')
    cfg = config(tmp_path, csv, "csv", "output.max_quarantine_fraction=1.0")
    m = embed.run(cfg)
    assert m["rows"]["in"] == 5 and m["rows"]["written"] == 2
    assert m["quarantine_reasons"] == {"malformed_record": 1, "null_id": 1, "null_text": 1}

    pq_in = tmp_path / "in.parquet"
    pq.write_table(pa.table({"doc": pa.array([10, 11, 11, None, 12], pa.int64()),
                             "body": ["fine", "x", "y", "z", ""]}), pq_in)
    cfg = config(tmp_path / "p", pq_in, "parquet", "input.id_column=doc", "input.text_column=body",
                 "input.passthrough=[]", "output.max_quarantine_fraction=1.0")
    m = embed.run(cfg)
    assert m["rows"] == {"in": 5, "written": 1, "quarantined": 4, "truncated": 0}
    assert m["quarantine_reasons"] == {"duplicate_id": 2, "empty_text": 1, "null_id": 1}
    assert pq.read_schema(sorted((Path(cfg.output.path) / "embeddings").glob("*.parquet"))[0]).field("id").type \
        == pa.int64()


def _published(cfg) -> tuple[Path, dict]:
    out = Path(cfg.output.path)
    return out.resolve(), file_hashes(out / "embeddings")


def test_failure_mid_write_leaves_previous_table_intact(spark, tmp_path, sample_slice, monkeypatch):
    cfg = config(tmp_path, sample_slice)
    embed.run(cfg)
    before = _published(cfg)
    monkeypatch.setattr(embed, "write_table", crash_after(embed.write_table))
    with pytest.raises(OSError, match="injected"):
        embed.run(cfg)
    assert _published(cfg) == before
    assert pq.read_table(Path(cfg.output.path) / "embeddings").num_rows == 300


def test_too_many_bad_rows_fail_without_publishing(spark, tmp_path, sample_slice):
    cfg = config(tmp_path, sample_slice)
    embed.run(cfg)
    before = _published(cfg)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["fine", "", None], "split": ["x"] * 3}), bad)
    bad_cfg = config(tmp_path, bad, "parquet", "output.min_rows_share=0")   # the row-count guard is tested apart
    with pytest.raises(embed.QuarantineLimitError, match="2 of 3 rows"):
        embed.run(bad_cfg)
    assert _published(cfg) == before


def test_missing_column_is_a_clear_error_before_any_work(spark, tmp_path, sample_slice):
    cfg = config(tmp_path, sample_slice, "parquet", "input.text_column=body")
    with pytest.raises(InputError, match=r"no column\(s\) \['body'\]"):
        embed.run(cfg)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="does not exist"):
        embed.run(config(tmp_path, tmp_path / "nope.parquet"))


def test_calibrated_thresholds_are_stored_and_reused(spark, tmp_path, sample_slice):
    cfg = config(tmp_path, sample_slice, "parquet", "encoder.thresholds=calibrated",
                 "encoder.calibration_rows=200")
    m1 = embed.run(cfg)
    spec = FeatureSpec.load(cfg.output.path)
    assert spec.threshold_mode == "calibrated" and spec.thresholds.shape == (spec.dim,)
    bits = np.unpackbits(np.frombuffer(b"".join(pq.read_table(Path(cfg.output.path) / "embeddings")
                                                .column("embedding").to_pylist()), np.uint8).reshape(-1, spec.n_bytes), axis=1)
    assert np.abs(bits.mean(axis=0) - 0.5).max() < 0.2  # calibrated bits are balanced
    saved = tmp_path / "spec"
    spec.save(saved)
    cfg2 = config(tmp_path / "again", sample_slice, "parquet", "encoder.thresholds=calibrated",
                  f"encoder.thresholds_from={saved}")
    m2 = embed.run(cfg2)
    assert m2["feature_spec"]["fingerprint"] == m1["feature_spec"]["fingerprint"]
    zero = tmp_path / "zero_spec"
    spec.replace(threshold_mode="zero", thresholds=None).save(zero)
    # a reused spec of other code settings is a spec mismatch (exit 5) naming the setting (issue 19: was exit 2)
    with pytest.raises(SpecMismatchError, match=r"encoder\.thresholds = 'calibrated' but encoder\.thresholds_from .* "
                                                r"holds a binary/zero spec"):
        embed.run(config(tmp_path / "mixed", sample_slice, "parquet", "encoder.thresholds=calibrated",
                         f"encoder.thresholds_from={zero}"))


def test_chunks_give_the_truncate_codes_for_short_texts_and_identical_reruns(spark, tmp_path, sample_slice):
    """Every sample text fits one window: the chunks table holds the truncate table's codes, and reruns repeat."""
    src = tmp_path / "with_long.parquet"
    t = pq.read_table(sample_slice, columns=["id", "text", "split"]).slice(0, 120)
    long_text = " ".join(pq.read_table(sample_slice).column("text").to_pylist()[150:250])   # varied, > 256 tokens
    pq.write_table(pa.concat_tables([t, pa.table({"id": ["long"], "text": [long_text], "split": ["train"]})
                                     .cast(t.schema)]), src)
    trunc = config(tmp_path / "t", src)
    chunks = config(tmp_path / "c", src, "parquet", "encoder.long_text=chunks", "output.keep_runs=1")
    embed.run(trunc)
    m = embed.run(chunks)
    assert m["feature_spec"]["long_text"] == "chunks" and m["feature_spec"]["format_version"] == 2
    a = pq.read_table(Path(trunc.output.path) / "embeddings").to_pydict()
    b = pq.read_table(Path(chunks.output.path) / "embeddings").to_pydict()
    ta, tb = dict(zip(a["id"], a["embedding"])), dict(zip(b["id"], b["embedding"]))
    assert all(ta[i] == tb[i] for i in ta if i != "long")          # one window: identical codes
    assert ta["long"] != tb["long"]
    flags = dict(zip(b["id"], zip(b["n_tokens"], b["truncated"])))
    n_long = dict(zip(a["id"], a["n_tokens"]))["long"]
    assert n_long > 600 and flags["long"] == (n_long, False)       # read whole: not truncated
    assert dict(zip(a["id"], a["truncated"]))["long"] is True
    first = file_hashes(Path(chunks.output.path) / "embeddings")
    embed.run(chunks)
    assert file_hashes(Path(chunks.output.path) / "embeddings") == first


def test_keep_text_stores_the_text_and_predictions_can_carry_it(spark, tmp_path, sample_slice):
    cfg = config(tmp_path, sample_slice, "parquet", "input.keep_text=true")
    manifest = embed.run(cfg)
    table = pq.read_table(Path(cfg.output.path) / "embeddings")
    assert table.column_names[-2:] == ["split", "text"] and manifest["input"]["passthrough"] == ["split", "text"]
    src = pq.read_table(sample_slice).to_pydict()
    assert dict(zip(table.column("id").to_pylist(), table.column("text").to_pylist())) == dict(zip(src["id"],
                                                                                                   src["text"]))
    with pytest.raises(ConfigError, match="keep_text"):
        config(tmp_path, sample_slice, "parquet", "input.keep_text=true", "input.passthrough=[text]")


def test_nightly_feed_faults_are_read_or_quarantined_never_coerced(spark, tmp_path):
    # CSV: a quoted field spanning lines is one text; a record that cannot be parsed is quarantined
    csv = tmp_path / "multi.csv"
    csv.write_text('id,text\n1,"line one\nline two"\n2,plain\n3,too,many,fields\n')
    cfg = config(tmp_path / "c", csv, "csv", "output.max_quarantine_fraction=1.0", "input.keep_text=true")
    m = embed.run(cfg)
    emb = pq.read_table(Path(cfg.output.path) / "embeddings").to_pydict()
    assert dict(zip(emb["id"], emb["text"])) == {"1": "line one\nline two", "2": "plain"}
    assert m["rows"]["in"] == m["rows"]["written"] + m["rows"]["quarantined"] and m["rows"]["quarantined"] >= 1
    assert set(m["quarantine_reasons"]) == {"malformed_record"}
    # CSV: a quote never closed would swallow every later record into one text: the run stops and names the file
    unterminated = tmp_path / "open.csv"
    unterminated.write_text('id,text\n1,"say ""hi"" twice"\n2,"never closed\n3,next record\n')
    with pytest.raises(InputError, match=r"open\.csv has a quoted field that is never closed"):
        embed.run(config(tmp_path / "o", unterminated, "csv", "output.max_quarantine_fraction=1.0"))
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("**/*.parquet"))
    # Parquet: invalid UTF-8 in the text or the id is quarantined with its own reason, the run goes on
    bad = pa.array([b"fine text", b"caf\xe9 au lait", b"also fine"], pa.binary()).view(pa.string())
    ids = pa.array([b"a", b"b", b"\xffc"], pa.binary()).view(pa.string())
    pq_in = tmp_path / "utf8.parquet"
    pq.write_table(pa.table({"id": ids, "text": bad}), pq_in)
    cfg = config(tmp_path / "u", pq_in, "parquet", "input.passthrough=[]", "output.max_quarantine_fraction=1.0")
    m = embed.run(cfg)
    assert m["rows"] == {"in": 3, "written": 1, "quarantined": 2, "truncated": 0}
    assert m["quarantine_reasons"] == {"invalid_utf8": 2}
    # JSONL: float and boolean ids are quarantined, not turned into strings like "15998.0" / "true"
    js = tmp_path / "ids.jsonl"
    js.write_text("\n".join(json.dumps(r) for r in [{"id": "x1", "text": "a"}, {"id": 15998.0, "text": "b"},
                                                     {"id": True, "text": "c"}, {"id": "x2", "text": "d"}]) + "\n")
    cfg = config(tmp_path / "j", js, "jsonl", "output.max_quarantine_fraction=1.0")
    m = embed.run(cfg)
    assert pq.read_table(Path(cfg.output.path) / "embeddings").column("id").to_pylist() in (["x1", "x2"],
                                                                                            ["x2", "x1"])
    assert m["quarantine_reasons"] == {"id_wrong_type": 2}
    js.write_text("\n".join(json.dumps(r) for r in [{"id": 7, "text": "a"}, {"id": 2.5, "text": "b"}]) + "\n")
    m = embed.run(config(tmp_path / "k", js, "jsonl", "output.max_quarantine_fraction=1.0"))
    assert m["rows"]["written"] == 1 and m["quarantine_reasons"] == {"id_wrong_type": 1}


def test_an_empty_or_truncated_feed_does_not_replace_the_table(spark, tmp_path, sample_slice):
    cfg = config(tmp_path, sample_slice)
    embed.run(cfg)
    before = _published(cfg)
    small = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(sample_slice).slice(0, 100), small)          # 100 of 300 rows: a drop of 2/3
    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(sample_slice).slice(0, 0), empty)
    for path, match in ((small, "100 rows, below output.min_rows_share = 0.5 of the 300"), (empty, "no rows")):
        with pytest.raises(InputError, match=match):
            embed.run(config(tmp_path, path))
        assert _published(cfg) == before
    m = embed.run(config(tmp_path, small, "parquet", "output.force=true"))      # a real drop, forced
    assert m["rows"]["written"] == 100
