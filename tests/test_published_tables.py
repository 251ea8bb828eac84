"""The one table opener: every data file carries the table's spec, ids are unique; jobs fail with one line and a
documented exit code before touching their output."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from encoder.table import TableError, open_table
from jobs import apply_heads, embed, train_heads
from jobs.common import load_config

from .conftest import SAMPLE


@pytest.fixture(scope="module")
def two_tables(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    small = root / "small.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 80), small)
    for name, more in (("a", []), ("b", ["encoder.layers=last"])):   # same 48-byte width, other spec
        embed.run(load_config(embed.EmbedConfig, "conf/embed.yaml", [f"input.path={small}",
                                                                    f"output.path={root / name}", *more]))
    return root


def copy_table(src: Path, dst: Path) -> Path:
    shutil.copytree(src.resolve(), dst)
    return dst


def test_a_file_of_another_spec_is_refused(two_tables, tmp_path, spark):
    t = copy_table(two_tables / "a", tmp_path / "t")
    shutil.copy(next((two_tables / "b" / "embeddings").glob("*.parquet")), t / "embeddings" / "part-09999.parquet")
    with pytest.raises(TableError, match="part-09999.parquet was written with feature spec"):
        open_table(t)
    cfg = load_config(apply_heads.ApplyHeadsConfig, "conf/apply_heads.yaml", [f"embeddings={t}",
                                                                              f"output.path={tmp_path / 'p'}"])
    with pytest.raises(TableError):
        apply_heads.run(cfg)
    assert not (tmp_path / "p").exists()


def test_duplicate_ids_are_refused(two_tables, tmp_path, spark):
    t = copy_table(two_tables / "a", tmp_path / "t")
    first = next((t / "embeddings").glob("*.parquet"))
    shutil.copy(first, t / "embeddings" / "part-09999.parquet")
    m = json.loads((t / "manifest.json").read_text())     # the manifest's count made to agree with the footers
    m["rows"]["written"] += pq.read_metadata(first).num_rows
    (t / "manifest.json").write_text(json.dumps(m))
    open_table(t)  # every file carries the spec, the counts agree ...
    cfg = load_config(train_heads.TrainHeadsConfig, "conf/train_heads.yaml", [
        f"embeddings={t}", f"output.path={tmp_path / 'h'}"])
    with pytest.raises(TableError, match="occurs 2 times"):   # ... but the ids repeat
        train_heads.run(cfg)
    assert not (tmp_path / "h").exists()


def test_model_errors_are_config_errors_before_spark_and_before_a_run_folder(tmp_path, capsys, monkeypatch):
    def no_spark(*a, **k):
        raise AssertionError("Spark was started")

    monkeypatch.setattr(embed, "spark_session", no_spark)
    out = tmp_path / "emb"
    for setting, text in (("encoder.layers=[7]", "encoder.layers = [7]: layers contains 7"),
                          ("input.path=" + str(tmp_path / "none.parquet"), "input.path")):
        code = embed.main(["--set", setting, "--set", f"output.path={out}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code in (2, 3) and text in err[-1] and "Traceback" not in "\n".join(err)
    runs = tmp_path / "emb.runs"           # only the run log (a monitor sees the failures), no run folder
    assert not out.exists() and not [p for p in runs.iterdir() if p.is_dir()]
    assert [json.loads(x)["exit_code"] for x in (runs / "runs.jsonl").read_text().splitlines()] == [2, 3]


def test_a_missing_passthrough_column_is_reported_before_spark(tmp_path, capsys, monkeypatch):
    def no_spark(*a, **k):
        raise AssertionError("Spark was started")

    monkeypatch.setattr(embed, "spark_session", no_spark)
    other = tmp_path / "other.parquet"
    t = pq.read_table(SAMPLE).slice(0, 10).select(["id", "text"])
    pq.write_table(t, other)
    code = embed.main(["--set", f"input.path={other}", "--set", "input.passthrough=[split]",
                       "--set", f"output.path={tmp_path / 'e'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len([line for line in err if "InputError" in line]) == 1
    assert "has no column(s) ['split']" in err[-1]


def test_code_index_over_a_published_table_finds_a_row_by_its_text(two_tables):
    from search.index import CodeIndex

    index = CodeIndex.from_table(two_tables / "a")
    t = pq.read_table(SAMPLE).slice(0, 80).to_pydict()
    out = index.search([t["text"][17], t["text"][42]], k=3).to_pydict()
    assert out["id"][0] == t["id"][17] and out["hamming"][0] == 0
    assert out["id"][3] == t["id"][42] and out["hamming"][3] == 0
    assert len(index.ids) == 80 and index.codes.shape == (80, 48)
