"""SQL over the published tables for analysts: the same views in Spark SQL and DuckDB, and ``hamming(a, b)``.

    python -m jobs.sql "SELECT label, count(*) FROM ..." [--engine duckdb|spark] [--view name=path ...]

Views (each only when its table exists):
- ``embeddings``, ``quarantine``: the embed job's tables (``--embeddings``, default out/embed; every file's spec checked);
- ``source``: the embed job's input, read from the path and format its manifest records (to join back to the text);
- ``predictions``: the apply job's table (``--predictions``, default out/predictions); ``predictions_prev``: the
  published predictions run before it (kept by ``output.keep_runs``), to see what changed;
- ``neighbours``, ``duplicates``: the neighbours job's tables (``--neighbours``, default out/neighbours).

Read-only: analysts' SQL reads the published views and nothing else; anything else is a ``QueryRefusedError``
(exit code 8, one line on stderr), checked by each engine's own parser and enforced by its own controls:

- DuckDB: the statement must be one query (``StatementType.SELECT`` by DuckDB's parser, ``extract_statements``: SELECT,
  WITH, FROM, VALUES, DESCRIBE, SUMMARIZE, SHOW, ``PRAGMA`` table functions; not COPY, ATTACH, SET, CREATE, INSTALL,
  EXPORT, EXPLAIN...), and it runs the statement that was checked. The connection has ``allowed_directories`` /
  ``allowed_paths`` set to the views' own folders and files, then ``enable_external_access = false`` (no other file,
  no ATTACH of a file, no extension install or load) and ``lock_configuration = true`` (no query can turn them back).
  ``allowed_directories`` would let a write into the view folders through, so the statement check is what stops writes.
- Spark: the text must parse with Spark's own parser as a query (``sqlParser.parseQuery``, the grammar's ``query``
  rule: no INSERT, INSERT OVERWRITE DIRECTORY, CREATE, CACHE, SET, EXECUTE IMMEDIATE, EXPLAIN...); the plan that
  parsed is the one run. It runs in a session of its own (``newSession``: the caller's is not changed) with
  ``spark.sql.runSQLOnFiles = false`` (no ``parquet.`/any/path```) and without ``reflect``, ``java_method`` and
  ``try_reflect`` (they call any static Java method: Hadoop's ``FileUtil.chmod``, say), dropped from its function
  registry. Spark has no read-only session flag.

A query that does not parse or names an unknown view, column or function is an ``InputError`` (exit code 3).

``hamming(a, b)``: bits that differ between two binary codes of equal length (null when either is null). Spark: a
vectorised pandas UDF over whole Arrow batches (``search.kernels.pair_hamming``). DuckDB: a macro over DuckDB's own
bit functions, ``bit_count(xor(a::BIT, b::BIT))`` (a BLOB must be cast to BIT for ``xor`` and ``bit_count``).

``int8_cosine(a, b)``: the cosine of two rows of the ``embedding_int8`` column (a table embedded with
``output.rescore: int8``), each decoded with the table's per-dimension rescore scales; defined only when the
``embeddings`` view has that column. Spark: a pandas UDF (``FeatureSpec.decode_rescore`` + ``search.kernels.cosine_rows``).
DuckDB: a macro of DuckDB's own functions (the bytes through ``hex``, signed, times the scales as a constant list,
``list_cosine_similarity``), so no Python function runs inside DuckDB and the locked connection stays as it is.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd   # module level: pandas_udf resolves the type hints in this module's globals

from encoder.schema import EMBEDDING_INT8
from encoder.spec import FeatureSpec
from encoder.table import EMBEDDINGS_DIR, open_table, published_run
from encoder.typed_config import first_line
from jobs.errors import InputError, QueryRefusedError, exit_code, one_line
from jobs.tables import check_neighbours_run, check_predictions_run, run_before

Engine = Literal["duckdb", "spark"]
DUCKDB_HAMMING = "CREATE OR REPLACE MACRO hamming(a, b) AS bit_count(xor(a::BIT, b::BIT))"
ONLY = "jobs.sql runs only queries over the published views"
SPARK_REFLECTION = ("reflect", "java_method", "try_reflect")     # call any static Java method: dropped
RESCORE_HINT = (f"int8_cosine and the {EMBEDDING_INT8} column exist only for a table embedded with "
                "output.rescore=int8")


def views(embeddings: str | Path = "out/embed", predictions: str | Path = "out/predictions",
          neighbours: str | Path = "out/neighbours") -> dict[str, tuple[str, str]]:
    """View name -> (format, path) for every published table found under the given outputs, each output resolved
    once to the run it points to now (its run folder), so a run published meanwhile never mixes into a query."""
    out: dict[str, tuple[str, str]] = {}
    emb = published_run(embeddings).root
    if (emb / EMBEDDINGS_DIR).is_dir():
        table = open_table(emb)                       # a file of another spec is refused before any query runs
        out["embeddings"] = ("parquet", str(table.data))
        if (emb / "quarantine").is_dir():
            out["quarantine"] = ("parquet", str(emb / "quarantine"))
        source = table.manifest.get("input", {})
        if source.get("path") and Path(source["path"]).exists():
            out["source"] = (source.get("format", "parquet"), source["path"])
    pinned = published_run(predictions)
    pred = pinned.root
    if (pred / "predictions").is_dir():
        check_predictions_run(pred)                   # manifest present and its counts the files': else exit 6
        out["predictions"] = ("parquet", str(pred / "predictions"))
        prev = run_before(pinned)                     # the run before the pinned one, not before the link now
        if prev is not None and (prev / "predictions").is_dir():
            check_predictions_run(prev)
            out["predictions_prev"] = ("parquet", str(prev / "predictions"))
    nb = published_run(neighbours).root
    if (nb / "search").is_dir() or (nb / "duplicates").is_dir():
        check_neighbours_run(nb)
    for name, folder in (("neighbours", "search"), ("duplicates", "duplicates")):
        if (nb / folder).is_dir():
            out[name] = ("parquet", str(nb / folder))
    return out


def rescore_spec(tables: dict[str, tuple[str, str]]) -> FeatureSpec | None:
    """The ``embeddings`` view's feature spec when its table has the int8 rescoring column (``int8_cosine`` decodes
    with its scales), else None. The view's folder is a run's ``embeddings/``; its spec is in the run folder."""
    if "embeddings" not in tables:
        return None
    folder = Path(tables["embeddings"][1])
    try:
        spec = FeatureSpec.load(folder.parent)
    except (OSError, ValueError):
        return None
    return spec if spec.rescore == "int8" else None


def _with_hint(message: str) -> str:
    """An engine's error about the rescoring column or function, with what makes them exist."""
    about = "int8_cosine" in message or EMBEDDING_INT8 in message
    missing = any(w in message for w in ("not found", "does not exist", "UNRESOLVED", "cannot be resolved"))
    return f"{message} ({RESCORE_HINT})" if about and missing else message


# -- DuckDB -------------------------------------------------------------------------------------------------------
def duckdb_int8_cosine(spec: FeatureSpec) -> str:
    """The ``int8_cosine(a, b)`` macro for a spec's int8 column: each of the ``dim`` bytes read through ``hex`` (DuckDB
    has no byte accessor for a BLOB), made signed, times its scale (a DOUBLE list literal of the float32 scales,
    exactly), then DuckDB's ``list_cosine_similarity``; null when either is null, an error for a value of another
    width (an ``embedding`` code passed by mistake)."""
    scales = "[" + ", ".join(repr(float(x)) for x in spec.rescore_scales) + "]::DOUBLE[]"   # type: ignore[union-attr]

    def vector(arg: str) -> str:
        return (f"list_transform(regexp_extract_all(hex({arg}), '..'), (h, i) -> "
                f"((('0x' || h)::INTEGER + 128) % 256 - 128) * ({scales})[i])")
    n = spec.rescore_bytes
    return (f"CREATE OR REPLACE MACRO int8_cosine(a, b) AS CASE WHEN a IS NULL OR b IS NULL THEN NULL "
            f"WHEN octet_length(a::BLOB) = {n} AND octet_length(b::BLOB) = {n} "
            f"THEN list_cosine_similarity({vector('a')}, {vector('b')}) "
            f"ELSE error('int8_cosine(a, b) needs two {EMBEDDING_INT8} values of {n} bytes') END")


def duckdb_connect(tables: dict[str, tuple[str, str]]):
    """An in-memory DuckDB connection with one view per table (reading the Parquet files in place) and ``hamming``;
    read-only: no file but the views' own can be read, none written or attached, and the settings are locked."""
    import duckdb

    con = duckdb.connect()
    folders, files = [], []
    for name, (fmt, path) in tables.items():
        p = Path(os.path.abspath(path))
        try:
            con.execute(f"CREATE VIEW {_ident(name)} AS SELECT * FROM {_duckdb_reader(fmt, str(p))}")
        except duckdb.Error as exc:
            raise InputError(f"view {name} = {path!r} could not be read as {fmt}: {first_line(exc)}") from None
        (folders if p.is_dir() else files).append(str(p) + os.sep if p.is_dir() else str(p))
    con.execute(DUCKDB_HAMMING)
    spec = rescore_spec(tables)
    if spec is not None:
        con.execute(duckdb_int8_cosine(spec))
    for setting, paths in (("allowed_directories", folders), ("allowed_paths", files)):
        if paths:
            con.execute(f"SET {setting} = [{', '.join(_literal(x) for x in paths)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def duckdb_query(con, query: str, limit: int) -> tuple[list[str], list[tuple]]:
    """Run one query on a ``duckdb_connect`` connection: the statement checked by DuckDB's parser is the one run."""
    import duckdb

    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise InputError(f"the query does not parse: {first_line(exc)}") from None
    if not statements:
        raise InputError("no SQL statement given")
    if len(statements) != 1:
        raise QueryRefusedError(f"{len(statements)} statements given; {ONLY}, one per call")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryRefusedError(f"{kind.name} is not a query (DuckDB's parser); {ONLY}")
    try:
        rel = con.sql(statements[0])
        return rel.columns, rel.fetchmany(limit)
    except duckdb.PermissionException as exc:
        raise QueryRefusedError(f"the query reads a file outside the published views (DuckDB: "
                                f"enable_external_access = false): {first_line(exc)}") from None
    except duckdb.Error as exc:       # parser, binder, catalog, conversion, invalid input: the query's fault
        raise InputError(_with_hint(first_line(exc))) from None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _duckdb_reader(fmt: str, path: str) -> str:
    """The DuckDB table function over a view's files: the files the pipeline's own listing reads (the format's file
    names; a stray README or _SUCCESS in the folder is left out), as an explicit list."""
    from jobs.ingest import FORMATS, list_input    # lazily: the DuckDB path never starts Spark

    listing = list_input(str(path), fmt, "view")  # type: ignore[arg-type]
    files = [str(path)] if listing is None else [str(f) for f in listing.files]
    return FORMATS[fmt].duckdb.format(path="[" + ", ".join(_literal(f) for f in files) + "]")


def _ident(name: str) -> str:
    if not name.isidentifier():
        raise InputError(f"view name {name!r} is not an identifier")
    return name


# -- Spark --------------------------------------------------------------------------------------------------------
def spark_register(spark, tables: dict[str, tuple[str, str]]) -> None:
    """Register one temporary view per table and the vectorised ``hamming`` function in this SparkSession, and
    ``int8_cosine`` when the embeddings view has the int8 rescoring column."""
    from jobs.ingest import read_table

    for name, (fmt, path) in tables.items():
        read_table(spark, path, fmt, f"view {name}").createOrReplaceTempView(_ident(name))
    spark.udf.register("hamming", hamming_udf())
    spec = rescore_spec(tables)
    if spec is not None:
        spark.udf.register("int8_cosine", int8_cosine_udf(spec))


def spark_readonly_session(spark, tables: dict[str, tuple[str, str]]):
    """A new session of ``spark`` (its own temporary views, settings and functions; ``spark`` is not changed) with the
    views and ``hamming``, ``spark.sql.runSQLOnFiles = false``, and no ``reflect``, ``java_method``, ``try_reflect``."""
    session = spark.newSession()
    spark_register(session, tables)
    session.conf.set("spark.sql.runSQLOnFiles", "false")
    registry = session._jsparkSession.sessionState().functionRegistry()
    ident = session._jvm.org.apache.spark.sql.catalyst.FunctionIdentifier
    for name in SPARK_REFLECTION:
        registry.dropFunction(ident.apply(name))
    return session


def spark_query(session, query: str):
    """The query as a DataFrame of a ``spark_readonly_session``: the text must parse as a query with Spark's own
    parser (``parseQuery``), and the plan that parsed is the one run; a statement is refused before anything runs."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import DataFrame

    jsession = session._jsparkSession
    parser = jsession.sessionState().sqlParser()
    text = query.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    try:
        plan = parser.parseQuery(text)
    except Exception:  # noqa: BLE001 - not a query: a statement, or no SQL at all
        try:
            statement = parser.parsePlan(query)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"the query does not parse: {first_line(exc)}") from None
        while statement.getClass().getSimpleName() == "UnresolvedWith":       # WITH ... INSERT: name the INSERT
            statement = statement.child()
        raise QueryRefusedError(f"{statement.getClass().getSimpleName()} is not a query (Spark's parser); {ONLY}") \
            from None
    try:
        return DataFrame(session._jvm.org.apache.spark.sql.classic.Dataset.ofRows(jsession, plan), session)
    except AnalysisException as exc:
        raise _spark_refusal(session, exc) or InputError(_with_hint(first_line(exc))) from None


def _spark_refusal(session, exc) -> QueryRefusedError | None:
    """The analysis error of a query that reached for a file or a Java method, as the refusal it is."""
    cond, params = exc.getCondition(), exc.getMessageParameters() or {}
    if cond == "TABLE_OR_VIEW_NOT_FOUND":
        parts = [p.replace("``", "`") for p in re.findall(r"`((?:[^`]|``)*)`", params.get("relationName", ""))]
        if len(parts) == 2 and _is_data_source(session, parts[0]):
            return QueryRefusedError(f"the query reads the file {parts[1]!r} directly; only the published views can "
                                     "be read (Spark: spark.sql.runSQLOnFiles = false)")
    if cond == "UNRESOLVED_ROUTINE":
        name = params.get("routineName", "").strip("`").lower()
        if name in SPARK_REFLECTION:
            return QueryRefusedError(f"{name}() calls Java methods and is not available; {ONLY}")
    return None


def _is_data_source(session, name: str) -> bool:
    """Whether Spark would read ``name.`path``` as a file of that format (Spark's own data source lookup)."""
    try:
        session._jvm.org.apache.spark.sql.execution.datasources.DataSource.lookupDataSource(
            name, session._jsparkSession.sessionState().conf())
        return True
    except Exception:  # noqa: BLE001 - no such data source
        return False


def hamming_udf():
    """``hamming(a, b)`` for Spark SQL: a pandas UDF, so a whole Arrow batch is one numpy call, not a row at a time."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("int")
    def hamming(a: pd.Series, b: pd.Series) -> pd.Series:
        import numpy as np

        from search.kernels import pair_hamming

        ok = (a.notna() & b.notna()).to_numpy()
        out = pd.Series(pd.array([None] * len(a), dtype="Int32"), index=a.index)
        if ok.any():
            xa, xb = [bytes(v) for v in a[ok]], [bytes(v) for v in b[ok]]
            widths = {len(v) for v in xa} | {len(v) for v in xb}
            if len(widths) != 1:
                raise ValueError(f"hamming(a, b) needs binary codes of one length; found lengths {sorted(widths)}")
            n = widths.pop()
            d = pair_hamming(np.frombuffer(b"".join(xa), np.uint8).reshape(-1, n),
                             np.frombuffer(b"".join(xb), np.uint8).reshape(-1, n))
            out[ok] = d
        return out

    return hamming


def int8_cosine_udf(spec: FeatureSpec):
    """``int8_cosine(a, b)`` for Spark SQL: a pandas UDF decoding both int8 rows with ``spec``'s rescore scales and
    taking the library's one cosine (``search.kernels.cosine_rows``), a whole Arrow batch per numpy call."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("double")
    def int8_cosine(a: pd.Series, b: pd.Series) -> pd.Series:
        from encoder.quantize import codes_from_column
        from search.kernels import cosine_rows

        ok = (a.notna() & b.notna()).to_numpy()
        out = pd.Series(pd.array([None] * len(a), dtype="Float64"), index=a.index)
        if ok.any():
            width = spec.rescore_bytes
            xa = spec.decode_rescore(codes_from_column([bytes(v) for v in a[ok]], width))
            xb = spec.decode_rescore(codes_from_column([bytes(v) for v in b[ok]], width))
            out[ok] = cosine_rows(xa, xb)
        return out

    return int8_cosine


# -- CLI ----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs.sql", description="Run one SQL query over the published tables.")
    p.add_argument("query", help="the SQL; views: embeddings, quarantine, source, predictions, predictions_prev, "
                   "neighbours, duplicates; functions hamming(a, b), int8_cosine(a, b) (a table embedded with "
                   "output.rescore=int8)")
    p.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb")
    p.add_argument("--embeddings", default="out/embed")
    p.add_argument("--predictions", default="out/predictions")
    p.add_argument("--neighbours", default="out/neighbours")
    p.add_argument("--view", action="append", default=[], metavar="NAME=PATH",
                   help="another Parquet table (a file or folder) as a view; repeatable")
    p.add_argument("--limit", type=int, default=50, help="rows printed (default 50)")
    args = p.parse_args(argv)
    try:
        tables = views(args.embeddings, args.predictions, args.neighbours)
        for item in args.view:
            name, _, path = item.partition("=")
            if not path:
                raise InputError(f"--view {item!r}: expected NAME=PATH")
            tables[name] = ("parquet", path)
        if args.engine == "duckdb":
            con = duckdb_connect(tables)           # held: the relation reads through it
            columns, rows = duckdb_query(con, args.query, args.limit)
        else:
            from pyspark.logger import PySparkLogger

            from jobs.common import SparkSettings, spark_session

            for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):   # the error is our one line
                PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)
            session = spark_readonly_session(spark_session(SparkSettings(), "sql"), tables)
            df = spark_query(session, args.query)
            columns, rows = df.columns, [tuple(r) for r in df.limit(args.limit).collect()]
    except Exception as exc:  # noqa: BLE001 - known errors become exit codes, the rest keep their traceback
        code = exit_code(exc)
        if code is None:
            raise
        print(f"jobs.sql: {one_line(exc)}", file=sys.stderr)
        return code
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(_cell(v) for v in r) + " |")
    return 0


def _cell(v) -> str:
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v).hex()
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return str(v).replace("|", "\\|").replace("\n", " ")


if __name__ == "__main__":
    sys.exit(main())
