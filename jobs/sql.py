"""SQL over the published tables for analysts: the same views in Spark SQL and DuckDB, and ``hamming(a, b)``.

    python -m jobs.sql "SELECT label, count(*) FROM ..." [--engine duckdb|spark] [--view name=path ...]

Views (each only when its table exists):
- ``embeddings``, ``quarantine``: the embed job's tables (``--embeddings``, default out/embed; every file's spec checked);
- ``source``: the embed job's input, read from the path and format its manifest records (to join back to the text);
- ``predictions``: the apply job's table (``--predictions``, default out/predictions); ``predictions_prev``: the
  published predictions run before it (kept by ``output.keep_runs``), to see what changed;
- ``neighbours``, ``duplicates``: the neighbours job's tables (``--neighbours``, default out/neighbours).

``hamming(a, b)``: bits that differ between two binary codes of equal length (null when either is null). Spark: a
vectorised pandas UDF over whole Arrow batches (``search.kernels.pair_hamming``). DuckDB: a macro over DuckDB's own
bit functions, ``bit_count(xor(a::BIT, b::BIT))`` (a BLOB must be cast to BIT for ``xor`` and ``bit_count``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd   # module level: pandas_udf resolves the type hints in this module's globals

from encoder.table import EMBEDDINGS_DIR, TableError, open_table
from jobs import publish
from jobs.errors import InputError

Engine = Literal["duckdb", "spark"]
DUCKDB_HAMMING = "CREATE OR REPLACE MACRO hamming(a, b) AS bit_count(xor(a::BIT, b::BIT))"


def views(embeddings: str | Path = "out/embed", predictions: str | Path = "out/predictions",
          neighbours: str | Path = "out/neighbours") -> dict[str, tuple[str, str]]:
    """View name -> (format, path) for every published table found under the given outputs."""
    out: dict[str, tuple[str, str]] = {}
    emb = Path(embeddings)
    if (emb / EMBEDDINGS_DIR).is_dir():
        table = open_table(emb)                       # a file of another spec is refused before any query runs
        out["embeddings"] = ("parquet", str(table.data))
        if (emb / "quarantine").is_dir():
            out["quarantine"] = ("parquet", str(emb / "quarantine"))
        source = table.manifest.get("input", {})
        if source.get("path") and Path(source["path"]).exists():
            out["source"] = (source.get("format", "parquet"), source["path"])
    pred = Path(predictions)
    if (pred / "predictions").is_dir():
        out["predictions"] = ("parquet", str(pred / "predictions"))
        prev = publish.previous_run(pred)
        if prev is not None and (prev / "predictions").is_dir():
            out["predictions_prev"] = ("parquet", str(prev / "predictions"))
    nb = Path(neighbours)
    for name, folder in (("neighbours", "search"), ("duplicates", "duplicates")):
        if (nb / folder).is_dir():
            out[name] = ("parquet", str(nb / folder))
    return out


# -- DuckDB -------------------------------------------------------------------------------------------------------
def duckdb_connect(tables: dict[str, tuple[str, str]]):
    """An in-memory DuckDB connection with one view per table (reading the Parquet files in place) and ``hamming``."""
    import duckdb

    con = duckdb.connect()
    for name, (fmt, path) in tables.items():
        con.execute(f"CREATE VIEW {_ident(name)} AS SELECT * FROM {_duckdb_reader(fmt, path)}")
    con.execute(DUCKDB_HAMMING)
    return con


def _duckdb_reader(fmt: str, path: str) -> str:
    p = Path(path)
    glob = str(p / "*.parquet") if p.is_dir() and fmt == "parquet" else str(p / "*") if p.is_dir() else str(p)
    from jobs.ingest import FORMATS    # lazily: the DuckDB path never starts Spark

    return FORMATS[fmt].duckdb.format(path="'" + glob.replace("'", "''") + "'")


def _ident(name: str) -> str:
    if not name.isidentifier():
        raise InputError(f"view name {name!r} is not an identifier")
    return name


# -- Spark --------------------------------------------------------------------------------------------------------
def spark_register(spark, tables: dict[str, tuple[str, str]]) -> None:
    """Register one temporary view per table and the vectorised ``hamming`` function in this SparkSession."""
    from jobs.ingest import read_table

    for name, (fmt, path) in tables.items():
        read_table(spark, path, fmt, f"view {name}").createOrReplaceTempView(_ident(name))
    spark.udf.register("hamming", hamming_udf())


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


# -- CLI ----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs.sql", description="Run one SQL query over the published tables.")
    p.add_argument("query", help="the SQL; views: embeddings, quarantine, source, predictions, predictions_prev, "
                   "neighbours, duplicates; function hamming(a, b)")
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
            rel = con.sql(args.query)
            columns, rows = rel.columns, rel.fetchmany(args.limit)
        else:
            from jobs.common import SparkSettings, spark_session

            spark = spark_session(SparkSettings(), "sql")
            spark_register(spark, tables)
            df = spark.sql(args.query)
            columns, rows = df.columns, [tuple(r) for r in df.limit(args.limit).collect()]
    except (InputError, TableError) as exc:
        print(f"jobs.sql: {exc}", file=sys.stderr)
        return 3
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
