"""Analysts' SQL is read-only (issue 19): through ``python -m jobs.sql`` (its ``main``), a statement that is not a query
(a write, an attach, a setting) and a query that reads files outside the published views are refused with one line on
stderr and exit code 8 (``QueryRefusedError``), in DuckDB and in Spark; the published files stay byte-identical and no
file appears. A plain query over the views still runs in both engines."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import publish, sql

REFUSED = 8


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root``: a file's sha256 and mode, a symlink's target, a folder as such."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = f"{hashlib.sha256(p.read_bytes()).hexdigest()} {oct(p.stat().st_mode)}"
    return out


@pytest.fixture
def published(tmp_path) -> dict[str, Path]:
    """A predictions output published like the apply job's (``<out>`` -> ``<out>.runs/<run>/``, two data files), and
    a Parquet file elsewhere that is no view."""
    out = tmp_path / "predictions"
    _, staging = publish.begin_run(out)
    (staging / "predictions").mkdir()
    for k in range(2):
        pq.write_table(pa.table({"id": [f"r{k}{i}" for i in range(3)], "neutral": ["neutral", "emotional", "neutral"]}),
                       staging / "predictions" / f"part-{k:05d}.parquet")
    (staging / "manifest.json").write_text('{"rows": {"in": 6, "out": 6}}\n')
    publish.publish(out, staging)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pq.write_table(pa.table({"secret": ["do not read"]}), elsewhere / "x.parquet")
    return {"root": tmp_path, "out": out, "run": out.resolve(), "data": out / "predictions",
            "elsewhere": elsewhere / "x.parquet"}


def run_sql(published, query: str, engine: str, capsys) -> tuple[int, str, str]:
    none = str(published["root"] / "none")
    code = sql.main([query, "--engine", engine, "--embeddings", none, "--predictions", str(published["out"]),
                     "--neighbours", none])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_refused(published, query: str, engine: str, capsys, *words: str) -> str:
    before = tree(published["root"])
    code, out, err = run_sql(published, query, engine, capsys)
    lines = err.strip().splitlines()
    assert code == REFUSED, (code, err)
    assert len(lines) == 1 and lines[0].startswith("jobs.sql: QueryRefusedError: "), err
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]
    assert out == ""
    assert tree(published["root"]) == before          # the published files byte-identical, no file added or removed
    return lines[0]


# -- the four writes of the issue ------------------------------------------------------------------------------------
def test_duckdb_copy_to_a_published_data_file_is_refused(published, capsys):
    target = published["data"] / "part-00000.parquet"
    assert_refused(published, f"COPY (SELECT * FROM predictions LIMIT 1) TO '{target}' (FORMAT PARQUET)", "duckdb",
                   capsys, "COPY")


def test_duckdb_copy_overwrite_of_the_predictions_folder_is_refused(published, capsys):
    assert_refused(published, f"COPY (SELECT 1 AS id) TO '{published['data']}' (FORMAT PARQUET, OVERWRITE)",
                   "duckdb", capsys, "COPY")
    assert len(list(published["data"].glob("*.parquet"))) == 2


def test_duckdb_attach_of_a_database_file_in_a_run_folder_is_refused(published, capsys):
    assert_refused(published, f"ATTACH '{published['run'] / 'x.db'}' AS x", "duckdb", capsys, "ATTACH")
    assert not (published["run"] / "x.db").exists()


@pytest.mark.spark
def test_spark_insert_overwrite_directory_is_refused(published, spark, capsys):
    assert_refused(published, f"INSERT OVERWRITE DIRECTORY '{published['data']}' USING parquet SELECT 'x' AS id",
                   "spark", capsys, "not a query")
    assert pq.read_table(published["data"]).num_rows == 6


# -- more statements that are not queries, and file access outside the views ----------------------------------------
@pytest.mark.parametrize("query", [
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "CREATE TABLE t AS SELECT * FROM predictions",
    "INSTALL httpfs",
    "EXPORT DATABASE '{root}/export'",
    "SELECT 1; COPY (SELECT 1) TO '{root}/y.csv'",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{root}/y.csv'",
])
def test_duckdb_other_statements_are_refused(published, capsys, query):
    assert_refused(published, query.format(root=published["root"]), "duckdb", capsys)


def test_duckdb_reads_no_file_outside_the_views(published, capsys):
    line = assert_refused(published, f"SELECT * FROM read_parquet('{published['elsewhere']}')", "duckdb", capsys,
                          "x.parquet")
    assert "do not read" not in line
    assert_refused(published, "SELECT * FROM read_text('/etc/hostname')", "duckdb", capsys)
    # the view's own folder through '..' is no way out either
    assert_refused(published, f"SELECT * FROM read_parquet('{published['data']}/../../elsewhere/x.parquet')",
                   "duckdb", capsys)


@pytest.mark.spark
@pytest.mark.parametrize("query", [
    "WITH a AS (SELECT 'x' AS id) INSERT OVERWRITE DIRECTORY '{data}' USING parquet SELECT * FROM a",
    "FROM predictions INSERT OVERWRITE DIRECTORY '{data}' USING parquet SELECT id",
    "CREATE TEMPORARY VIEW v USING parquet OPTIONS (path '{elsewhere}')",
    "SET spark.sql.runSQLOnFiles = true",
    "CACHE TABLE c AS SELECT * FROM predictions",
    "EXECUTE IMMEDIATE 'SELECT 1'",
])
def test_spark_other_statements_are_refused(published, spark, capsys, query):
    assert_refused(published, query.format(data=published["data"], elsewhere=published["elsewhere"]), "spark",
                   capsys, "not a query")


@pytest.mark.spark
def test_spark_reads_no_file_outside_the_views(published, spark, capsys):
    assert_refused(published, f"SELECT * FROM parquet.`{published['elsewhere']}`", "spark", capsys, "file")
    # reflect() calls any static Java method: here Hadoop's FileUtil.chmod on a published file
    target = published["data"] / "part-00000.parquet"
    assert_refused(published, f"SELECT reflect('org.apache.hadoop.fs.FileUtil', 'chmod', '{target}', '777')",
                   "spark", capsys, "reflect")
    assert_refused(published, "SELECT java_method('java.lang.System', 'getProperty', 'user.home')", "spark", capsys,
                   "java_method")


# -- queries still run -------------------------------------------------------------------------------------------------
QUERY = "SELECT neutral, count(*) AS n FROM predictions GROUP BY neutral ORDER BY neutral"
TABLE = "| neutral | n |\n|---|---|\n| emotional | 2 |\n| neutral | 4 |\n"


def test_duckdb_queries_over_the_views_still_run(published, capsys):
    before = tree(published["root"])
    assert run_sql(published, QUERY, "duckdb", capsys) == (0, TABLE, "")
    assert run_sql(published, "WITH p AS (FROM predictions) SELECT neutral, count(*) AS n FROM p GROUP BY ALL "
                   "ORDER BY 1;", "duckdb", capsys) == (0, TABLE, "")
    code, out, _ = run_sql(published, "DESCRIBE predictions", "duckdb", capsys)
    assert code == 0 and "| neutral | VARCHAR |" in out
    folder = sql.views(published["root"] / "none", published["out"], published["root"] / "none")["predictions"][1]
    code, out, _ = run_sql(published, f"SELECT count(*) AS n FROM read_parquet('{folder}/*.parquet')", "duckdb",
                           capsys)
    assert (code, out) == (0, "| n |\n|---|\n| 6 |\n")        # the view's own files may be read directly
    assert tree(published["root"]) == before


@pytest.mark.spark
def test_spark_queries_over_the_views_still_run(published, spark, capsys):
    before = tree(published["root"])
    assert run_sql(published, QUERY, "spark", capsys) == (0, TABLE, "")
    assert run_sql(published, "WITH p AS (SELECT * FROM predictions) SELECT neutral, count(*) AS n FROM p "
                   "GROUP BY neutral ORDER BY neutral;", "spark", capsys) == (0, TABLE, "")
    assert tree(published["root"]) == before
    # the session the tests share is not changed by the analyst's one
    assert spark.conf.get("spark.sql.runSQLOnFiles") == "true"
    assert spark.sql("SELECT reflect('java.lang.String', 'valueOf', 1) AS r").collect()[0]["r"] == "1"


@pytest.mark.spark
@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_a_query_that_does_not_parse_is_one_line_exit_3(published, spark, capsys, engine):
    code, out, err = run_sql(published, "SELEC neutral FROM predictions", engine, capsys)
    assert code == 3 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("jobs.sql: InputError: ")
    code, out, err = run_sql(published, "SELECT nope FROM predictions", engine, capsys)
    assert code == 3 and len(err.strip().splitlines()) == 1 and "nope" in err


def test_duckdb_views_read_the_pipelines_files_and_runtime_errors_are_exit_3(tmp_path):
    """A CSV folder with a stray README: the view reads the files the pipeline reads (DuckDB's own glob took the
    README and failed on a schema mismatch); a query failing at run time is InputError (exit 3), not a traceback."""
    from jobs.errors import InputError, exit_code

    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.csv").write_text("id,text\n1,hello\n2,world\n")
    (folder / "b.csv").write_text("id,text\n3,again\n")
    (folder / "README.txt").write_text("these are the texts of the nightly export\n")
    con = sql.duckdb_connect({"source": ("csv", str(folder))})
    assert sql.duckdb_query(con, "SELECT count(*) FROM source", 10)[1] == [(3,)]
    with pytest.raises(InputError) as err:
        sql.duckdb_query(con, "SELECT CAST('x' AS INTEGER)", 10)
    assert exit_code(err.value) == 3 and "\n" not in str(err.value)
