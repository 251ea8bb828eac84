"""Reading tables the jobs are given (Parquet, JSONL, CSV/TSV): the one place that knows the formats and checks
columns, for the text corpus and for label tables alike.

The corpus comes out in one shape with every faulty row marked: ``_id``, ``_text``, the passthrough columns,
``_reason`` (null = good row, else one of ``encoder.schema.QUARANTINE_REASONS``) and ``_source`` (the raw record for
parse failures). No row is dropped here: the caller splits on ``_reason`` and must account for every row.
"""
from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, get_args

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from encoder.schema import QuarantineReason, quarantine_reason
from encoder.typed_config import ConfigError
from jobs.errors import InputError

Format = Literal["parquet", "jsonl", "csv", "tsv"]
ID_SPARK_TYPES = (T.StringType, T.LongType, T.IntegerType)
# The normalised corpus frame's columns (internal to the embed job; never written).
C_ID, C_TEXT, C_REASON, C_SOURCE = "_id", "_text", "_reason", "_source"


@dataclass(frozen=True)
class InputConfig:
    """Where the corpus is and which columns hold the id and the text."""

    path: str                                          # a file or a folder of files
    format: Format = "parquet"
    id_column: str = "id"
    text_column: str = "text"
    passthrough: tuple[str, ...] = ()                  # copied unchanged to the embedding table (e.g. a split column)
    keep_text: bool = False                            # also store the text itself, as column `text` (for analysts;
                                                       # the table then grows by the corpus' size)

    def validate(self, source: str, prefix: str) -> None:
        if self.keep_text and "text" in self.passthrough:
            raise ConfigError(source, f"{prefix}passthrough", "has a column named 'text', which keep_text: true "
                              "writes; rename it or drop keep_text")
        clash = {C_ID, C_TEXT, C_REASON, C_SOURCE} & {self.id_column, self.text_column, *self.passthrough}
        if clash:
            raise ConfigError(source, f"{prefix}passthrough", f"uses reserved column names {sorted(clash)}")
        if self.id_column in self.passthrough or self.text_column in self.passthrough:
            raise ConfigError(source, f"{prefix}passthrough", "must not repeat id_column or text_column")


def to_uri(path: str) -> str:
    """A local path as a file:// URI (Spark and petastorm want a scheme); URIs pass through."""
    return path if "://" in path else Path(path).absolute().as_uri()


def require_path(path: str, key: str) -> None:
    if "://" not in path and not Path(path).exists():
        raise InputError(f"{key} = {path!r} does not exist")


def require_columns(columns: Sequence[str], wanted: Sequence[str], what: str, hint: str) -> None:
    """Every wanted column is there; the error names each missing one with its closest matches (not all columns)."""
    missing = [c for c in wanted if c not in columns]
    if missing:
        close = {c: difflib.get_close_matches(c, list(columns), n=3, cutoff=0.5) for c in missing}
        near = "; ".join(f"closest to {c!r}: {', '.join(m)}" for c, m in close.items() if m)
        shown = sorted(columns)[:10]
        more = f" and {len(columns) - 10} more" if len(columns) > 10 else ""
        raise InputError(f"{what} has no column(s) {missing}{f' ({near})' if near else ''}; it has {shown}{more} "
                         f"({hint})")


def header_columns(path: str, fmt: Format) -> list[str] | None:
    """The columns of a local Parquet or CSV/TSV input, read without Spark (footer or header line); None for JSONL
    and remote paths, whose columns are known only once Spark reads them."""
    p = Path(path)
    if "://" in path or fmt == "jsonl" or not p.exists():
        return None
    files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_"))) if p.is_dir() \
        else [p]
    if not files:
        return None
    if fmt == "parquet":
        return list(pq.read_schema(files[0]).names)
    with files[0].open(newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh, delimiter="\t" if fmt == "tsv" else ","), [])


def check_input(cfg: InputConfig) -> None:
    """Before Spark starts: the input exists and has the id, text and passthrough columns (where readable)."""
    require_path(cfg.path, "input.path")
    cols = header_columns(cfg.path, cfg.format)
    if cols is not None:
        _require_columns(cols, cfg, f"{cfg.format.upper()} input")


def read_table(spark: SparkSession, path: str, fmt: Format, key: str) -> DataFrame:
    """Read a typed table (Parquet, JSONL, CSV/TSV with a header and inferred types), e.g. a label table."""
    require_path(path, key)
    try:
        return FORMATS[fmt].typed(spark.read, to_uri(path))
    except Exception as exc:  # AnalysisException and friends: say what could not be read
        raise InputError(f"{key} = {path!r} could not be read as {fmt}: {str(exc).splitlines()[0]}") from None


def read_input(spark: SparkSession, cfg: InputConfig) -> DataFrame:
    """Read ``cfg.path`` and return the normalised frame with ``_reason`` set on every faulty row."""
    require_path(cfg.path, "input.path")
    return _mark_faults(FORMATS[cfg.format].corpus(spark, cfg))


def _require_columns(columns: list[str], cfg: InputConfig, what: str) -> None:
    require_columns(columns, [cfg.id_column, cfg.text_column, *cfg.passthrough], f"{what} {cfg.path!r}",
                    "set input.id_column / input.text_column / input.passthrough")


def _check_types(df: DataFrame, cfg: InputConfig) -> None:
    types = {f.name: f.dataType for f in df.schema.fields}
    if not isinstance(types[cfg.text_column], T.StringType):
        raise InputError(f"input.text_column {cfg.text_column!r} has type {types[cfg.text_column].simpleString()}; "
                         "expected string")
    if not isinstance(types[cfg.id_column], ID_SPARK_TYPES):
        raise InputError(f"input.id_column {cfg.id_column!r} has type {types[cfg.id_column].simpleString()}; "
                         "expected string, int or bigint")


def _normalise(df: DataFrame, cfg: InputConfig, reason, source) -> DataFrame:
    return df.select(F.col(cfg.id_column).alias(C_ID), F.col(cfg.text_column).alias(C_TEXT),
                     *[F.col(c) for c in cfg.passthrough], reason.cast("string").alias(C_REASON),
                     source.cast("string").alias(C_SOURCE))


def _read_parquet(spark: SparkSession, cfg: InputConfig) -> DataFrame:
    df = read_table(spark, cfg.path, "parquet", "input.path")
    _require_columns(df.columns, cfg, "Parquet input")
    _check_types(df, cfg)
    return _normalise(df, cfg, F.lit(None), F.lit(None))


def _read_csv(spark: SparkSession, cfg: InputConfig) -> DataFrame:
    sep = "\t" if cfg.format == "tsv" else ","
    # multiLine: a quoted field may span lines (real exports do); the cost is that a file is read by one task
    opts = {"header": "true", "sep": sep, "escape": '"', "mode": "PERMISSIVE", "multiLine": "true",
            "columnNameOfCorruptRecord": "_corrupt_record"}
    header = spark.read.options(**opts).csv(to_uri(cfg.path)).columns  # header only; every column is a string
    _require_columns(header, cfg, cfg.format.upper())
    schema = T.StructType([T.StructField(c, T.StringType()) for c in header] +
                          [T.StructField("_corrupt_record", T.StringType())])
    _refuse_unterminated_quotes(spark, cfg)
    df = spark.read.options(**opts).schema(schema).csv(to_uri(cfg.path))
    bad = F.col("_corrupt_record").isNotNull()
    return _normalise(df, cfg, F.when(bad, _reason("malformed_record")), F.when(bad, F.col("_corrupt_record")))


def _refuse_unterminated_quotes(spark: SparkSession, cfg: InputConfig) -> None:
    """A file with an odd number of '"' has a quoted field that never closes: under multiLine the parser would read
    every record from that quote to the end of the file as one text (exit 0, one bogus row embedded). No record
    boundary can be trusted after it, so the run stops and names the file. Costs one extra pass over the text."""
    q = F.length("value") - F.length(F.regexp_replace("value", '"', ""))
    odd = (spark.read.text(to_uri(cfg.path)).select(F.input_file_name().alias("file"), q.alias("q"))
           .groupBy("file").agg(F.sum("q").alias("q")).where(F.col("q") % 2 == 1).collect())
    if odd:
        names = ", ".join(sorted(Path(r["file"].replace("file://", "")).name for r in odd))
        raise InputError(f"input.path = {cfg.path!r}: {names} has a quoted field that is never closed (an odd number "
                         "of '\"' characters); every record after it would be read as one text. Fix or re-export "
                         "the file (a quote inside a quoted field is written as \"\")")


def _read_jsonl(spark: SparkSession, cfg: InputConfig) -> DataFrame:
    """JSON lines, checked per record with Spark's variant type: a text that is a number or list is caught, not
    stringified. Blank lines are not records and are skipped."""
    raw = spark.read.text(to_uri(cfg.path)).where(F.trim(F.col("value")) != "")
    inferred = spark.read.json(to_uri(cfg.path)).schema
    fields = {f.name: f for f in inferred.fields if f.name != "_corrupt_record"}
    _require_columns(list(fields), cfg, "JSONL input")
    fields[cfg.text_column] = T.StructField(cfg.text_column, T.StringType())
    if isinstance(fields[cfg.id_column].dataType, T.DoubleType):   # integer ids with some floats among them: the
        fields[cfg.id_column] = T.StructField(cfg.id_column, T.LongType())   # floats are quarantined below
    if not isinstance(fields[cfg.id_column].dataType, ID_SPARK_TYPES):
        raise InputError(f"input.id_column {cfg.id_column!r} has JSON type "
                         f"{fields[cfg.id_column].dataType.simpleString()}; expected string or integer")
    schema = T.StructType(list(fields.values()))
    v = F.expr("try_parse_json(value)")
    text_type = F.expr(f"schema_of_variant(variant_get(try_parse_json(value), '$.{_json_key(cfg.text_column)}', "
                       "'variant'))")
    id_type = F.expr(f"schema_of_variant(variant_get(try_parse_json(value), '$.{_json_key(cfg.id_column)}', "
                     "'variant'))")
    df = raw.select(F.col("value"), v.alias("_v"), text_type.alias("_ttype"), id_type.alias("_itype"),
                    F.from_json(F.col("value"), schema).alias("_r"))
    id_ok = (["STRING"] if isinstance(fields[cfg.id_column].dataType, T.StringType)
             else ["BIGINT", "INT", "SMALLINT", "TINYINT"])
    not_object = F.col("_v").isNull() | ~F.expr("schema_of_variant(_v)").startswith("OBJECT")
    reason = (F.when(not_object, _reason("malformed_record"))
              .when(F.col("_ttype").isNotNull() & ~F.col("_ttype").isin("STRING", "VOID"), _reason("text_not_string"))
              .when(F.col("_itype").isNotNull() & ~F.col("_itype").isin("VOID", *id_ok), _reason("id_wrong_type")))
    df = df.select(F.col("value"), reason.alias("_pre"), "_r.*")
    return _normalise(df, cfg, F.col("_pre"), F.when(F.col("_pre").isNotNull(), F.col("value")))


def _reason(name: QuarantineReason):
    """A quarantine reason as a Spark literal, checked against ``encoder.schema.QUARANTINE_REASONS``."""
    return F.lit(quarantine_reason(name))


def _json_key(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise InputError(f"input.text_column {name!r}: JSONL keys must be letters, digits and underscores")
    return name


def _mark_faults(df: DataFrame) -> DataFrame:
    """Fill ``_reason`` for null/duplicate ids and null/blank texts; parse faults already set take precedence."""
    dup = F.count(F.lit(1)).over(Window.partitionBy(C_ID)) > 1
    blank = F.length(F.regexp_replace(F.col(C_TEXT), r"(?U)\s+", "")) == 0
    invalid = ~F.expr(f"is_valid_utf8({C_TEXT})")
    if isinstance(df.schema[C_ID].dataType, T.StringType):
        invalid = invalid | ~F.expr(f"is_valid_utf8({C_ID})")
    reason = F.coalesce(
        F.col(C_REASON),
        F.when(F.col(C_ID).isNull(), _reason("null_id"))
        .when(F.col(C_TEXT).isNotNull() & invalid, _reason("invalid_utf8"))
        .when(F.col(C_TEXT).isNull(), _reason("null_text"))
        .when(blank, _reason("empty_text"))
        .when(dup, _reason("duplicate_id")))
    return df.withColumn(C_REASON, reason)


@dataclass(frozen=True)
class FormatReaders:
    """How one input format is read: as a typed table (label tables, SQL views), as the embed job's corpus (faults
    marked, nothing dropped), and by DuckDB (a table function; ``{path}`` is the quoted path or glob)."""

    typed: Callable[[Any, str], DataFrame]
    corpus: Callable[[SparkSession, InputConfig], DataFrame]
    duckdb: str


def _csv_typed(sep: str) -> Callable[[Any, str], DataFrame]:
    return lambda reader, uri: reader.options(header="true", inferSchema="true", sep=sep).csv(uri)


# The one table from an input format to its readers: a format is added here (and in ``Format``), nowhere else.
FORMATS: dict[str, FormatReaders] = {
    "parquet": FormatReaders(lambda reader, uri: reader.parquet(uri), _read_parquet, "read_parquet({path})"),
    "jsonl": FormatReaders(lambda reader, uri: reader.json(uri), _read_jsonl,
                           "read_json({path}, format = 'newline_delimited')"),
    "csv": FormatReaders(_csv_typed(","), _read_csv, "read_csv({path}, header = true)"),
    "tsv": FormatReaders(_csv_typed("\t"), _read_csv, "read_csv({path}, header = true, delim = '\\t')"),
}
assert set(FORMATS) == set(get_args(Format))
