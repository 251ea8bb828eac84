"""Reading tables the jobs are given (Parquet, JSONL, CSV/TSV): the one place that knows the formats and checks
columns, for the text corpus and for label tables alike.

Which files are read (``inspect_input``): a file named as ``input.path`` is read whatever its name; in a folder only
the files named for the format (``FormatReaders.extensions``, optionally compressed as ``.gz`` or ``.bz2``, which
Spark decompresses by name) are read, and the others (a stray ``README.txt``) are skipped and named in the log. Hidden
files (``.*``, ``_*``: Spark's ``_SUCCESS``, ``.crc``) are never data. Local files are checked before Spark: gzip bytes
under a name without ``.gz``, UTF-16 text and CSV/TSV headers that differ between files are refused; a UTF-8 byte-order
mark (Excel writes one) is read past; Parquet files must agree on the type of each column the job reads (integer
widths are widened to bigint; an int id in one file and a string id in another is refused, never coerced).

The corpus comes out in one shape with every faulty row marked: ``_id``, ``_text``, the passthrough columns,
``_reason`` (null = good row, else one of ``encoder.schema.QUARANTINE_REASONS``) and ``_source`` (the raw record for
parse failures). No row is dropped here: the caller splits on ``_reason`` and must account for every row.
"""
from __future__ import annotations

import bz2
import csv
import difflib
import gzip
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Literal, Sequence, get_args

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
logger = logging.getLogger(__name__)

# Compressed text inputs: Spark (Hadoop codecs) decompresses these by name, and so does the header check here.
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open}
# Compressions that are refused by name (not read by both Spark's default codecs and the standard library).
UNSUPPORTED_COMPRESSIONS = (".zst", ".zstd", ".xz", ".lz4", ".snappy", ".deflate", ".zip", ".7z", ".br", ".lzo")
# No visible content: the text is empty once whitespace, separators, control characters (NUL...), format characters
# (zero-width space, soft hyphen, BOM, bidi marks...) and combining marks are removed. Java regex (Spark); such a text
# tokenises to [CLS][SEP] and would get one code shared by every such row, so it is quarantined as empty_text.
INVISIBLE = r"(?U)[\s\p{Z}\p{Cc}\p{Cf}\p{M}]+"


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


@dataclass(frozen=True)
class Listing:
    """What a local input path holds: the data files read (sorted), the files skipped (not named for the format), the
    columns of the first data file (Parquet footer or CSV/TSV header; None for JSONL) and the Parquet integer columns
    whose width differs between files (read as bigint)."""

    files: tuple[Path, ...]
    skipped: tuple[Path, ...] = ()
    columns: tuple[str, ...] | None = None
    widen: tuple[str, ...] = ()


def data_suffixes(fmt: Format) -> tuple[str, ...]:
    """File name endings that hold data of ``fmt`` in a folder, lower and upper case (Spark's glob is case-sensitive,
    so both sides use exactly these)."""
    exts = FORMATS[fmt].extensions
    if fmt != "parquet":
        exts = exts + tuple(e + c for e in exts for c in COMPRESSIONS)
    return exts + tuple(e.upper() for e in exts)


def path_glob(fmt: Format) -> str:
    """The ``pathGlobFilter`` Spark reads a folder with: the same endings as ``data_suffixes``."""
    return "*{" + ",".join(data_suffixes(fmt)) + "}"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def list_input(path: str, fmt: Format, key: str) -> Listing | None:
    """The data files of a local file or folder (None for a remote path: Spark lists it, with the same filter)."""
    p = Path(path)
    if "://" in path or not p.exists():
        return None
    if not p.is_dir():
        bad = next((c for c in UNSUPPORTED_COMPRESSIONS if p.name.lower().endswith(c)), None)
        if bad and fmt != "parquet":
            raise InputError(f"{key} = {path!r} is compressed as {bad}, which is not read; supported: "
                             f"{', '.join(COMPRESSIONS)} (or decompress it)")
        return Listing((p,))
    found = sorted(f for f in p.rglob("*") if f.is_file() and not _hidden(f, p))
    suffixes = data_suffixes(fmt)
    files = tuple(f for f in found if f.name.endswith(suffixes))
    skipped = tuple(f for f in found if not f.name.endswith(suffixes))
    if not files:
        shown = ", ".join(str(f.relative_to(p)) for f in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        raise InputError(f"{key} = {path!r} holds no {fmt} files (names ending in "
                         f"{', '.join(sorted(set(s.lower() for s in suffixes)))})"
                         f"{f'; found only {shown}' if skipped else ''}")
    return Listing(files, skipped)


def _open_text(f: Path) -> IO[bytes]:
    """A text input file's bytes, decompressed by name; refuses gzip bytes under another name and UTF-16."""
    opener = next((fn for c, fn in COMPRESSIONS.items() if f.name.lower().endswith(c)), None)
    try:
        fh: IO[bytes] = opener(f, "rb") if opener else f.open("rb")   # type: ignore[assignment]
        head = fh.peek(4)[:4] if hasattr(fh, "peek") else b""
    except (OSError, EOFError) as exc:     # gzip.BadGzipFile, bz2's OSError, a cut stream: not gzip/bz2 data
        raise InputError(f"{f} is named {f.suffix} but could not be decompressed: {exc}") from None
    if head[:2] == b"\x1f\x8b":
        fh.close()
        raise InputError(f"{f} holds gzip-compressed bytes but its name does not end in .gz: they would be read as "
                         f"text; rename it to {f.name}.gz")
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        fh.close()
        raise InputError(f"{f} is UTF-16 text (e.g. Excel's 'Unicode Text'); save it as UTF-8 (Excel: 'CSV UTF-8')")
    return fh


def _csv_header(f: Path, fmt: Format) -> list[str]:
    """The header line of a CSV/TSV file: a UTF-8 byte-order mark is read past, undecodable bytes are replaced (a
    bad byte in a later row is that row's quarantine, not a reason to fail here)."""
    with _open_text(f) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="") as fh:
        try:
            return next(csv.reader(fh, delimiter="\t" if fmt == "tsv" else ","), [])
        except (OSError, EOFError) as exc:
            raise InputError(f"{f} could not be decompressed: {exc}") from None


def _type_family(t) -> str:
    import pyarrow as pa

    if pa.types.is_integer(t) and t != pa.uint64():
        return "integer"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    return str(t)


def _parquet_schemas(files: Sequence[Path], root: str, key: str, needed: Sequence[str] | None,
                     hint: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The first file's columns, and the integer columns to widen; refuses a file that is not Parquet, lacks a
    needed column, or gives a column another type than an earlier file (an int id and a string id are never
    merged: 1 and '1' would be one id or two depending on the file)."""
    first: dict[str, tuple[Any, Path]] = {}
    widen: set[str] = set()
    names: tuple[str, ...] = ()
    for i, f in enumerate(files):
        try:
            schema = pq.read_schema(f)
        except Exception as exc:   # ArrowInvalid: not a Parquet file (truncated, another format named .parquet)
            raise InputError(f"{key} = {root!r}: {f.name} is not a readable Parquet file: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        if i == 0:
            names = tuple(schema.names)
        if needed is not None:
            require_columns(schema.names, needed, f"Parquet file {str(f)!r}", hint)
        for name in needed if needed is not None else schema.names:
            if name not in schema.names:
                continue
            t = schema.field(name).type
            if name not in first:
                first[name] = (t, f)
                continue
            t0, f0 = first[name]
            if _type_family(t) != _type_family(t0):
                raise InputError(f"{key} = {root!r}: column {name!r} is {t0} in {f0.name} but {t} in {f.name}; "
                                 "every file must give a column one type (an id is never coerced: re-export the "
                                 "files with one id type)")
            if t != t0 and _type_family(t) == "integer":
                widen.add(name)
    return names, tuple(sorted(widen))


def inspect_input(path: str, fmt: Format, key: str, needed: Sequence[str] | None = None, hint: str = "",
                  log: bool = False) -> Listing | None:
    """Check a local input before Spark reads it (see the module doc); None for a remote path. ``needed``: columns
    every file must have; ``log``: name the skipped files in the log (once per read, not per check)."""
    listing = list_input(path, fmt, key)
    if listing is None:
        return None
    if log and listing.skipped:
        root = Path(path)
        logger.warning("%s = %r: skipped %d file(s) not named for %s (%s): %s", key, path, len(listing.skipped),
                       fmt, ", ".join(sorted(set(s.lower() for s in data_suffixes(fmt)))),
                       ", ".join(str(f.relative_to(root)) for f in listing.skipped[:20])
                       + (f" and {len(listing.skipped) - 20} more" if len(listing.skipped) > 20 else ""))
    if fmt == "parquet":
        columns, widen = _parquet_schemas(listing.files, path, key, needed, hint)
        return Listing(listing.files, listing.skipped, columns, widen)
    first: tuple[Path, list[str]] | None = None
    for f in listing.files:
        if fmt == "jsonl":
            with _open_text(f):    # sniffs gzip bytes / UTF-16
                pass
            continue
        header = _csv_header(f, fmt)
        if not header:             # an empty file: no header, no rows
            continue
        if first is None:
            first = (f, header)
        elif header != first[1]:
            raise InputError(f"{key} = {path!r}: {f.name} has the header {header} but {first[0].name} has "
                             f"{first[1]}; columns are read by position, so every file must have one header")
    columns = None if fmt == "jsonl" else tuple(first[1]) if first else ()
    return Listing(listing.files, listing.skipped, columns)


def header_columns(path: str, fmt: Format) -> list[str] | None:
    """The columns of a local Parquet or CSV/TSV input, read without Spark (footer or header line); None for JSONL
    and remote paths, whose columns are known only once Spark reads them."""
    listing = inspect_input(path, fmt, "input.path")
    return None if listing is None or listing.columns is None else list(listing.columns)


def check_input(cfg: InputConfig) -> None:
    """Before Spark starts: the input exists, its files are readable as the format and have the id, text and
    passthrough columns (where readable without Spark)."""
    require_path(cfg.path, "input.path")
    listing = inspect_input(cfg.path, cfg.format, "input.path", _needed(cfg), _HINT)
    if listing is not None and listing.columns is not None:
        _require_columns(list(listing.columns), cfg, f"{cfg.format.upper()} input")


def _is_folder(path: str) -> bool:
    """A folder is read through the format's name filter; a named file is read whatever its name (a remote path is
    taken for a folder when its last part has no '.')."""
    if "://" not in path:
        return Path(path).is_dir()
    return "." not in path.rstrip("/").rsplit("/", 1)[-1] or path.endswith("/")


def _reader(spark: SparkSession, path: str, fmt: Format):
    """A fresh DataFrameReader for ``path``: a folder is read through the format's file-name filter."""
    reader = spark.read
    return reader.option("pathGlobFilter", path_glob(fmt)) if _is_folder(path) else reader


def read_table(spark: SparkSession, path: str, fmt: Format, key: str, needed: Sequence[str] | None = None,
               hint: str = "") -> DataFrame:
    """Read a typed table (Parquet, JSONL, CSV/TSV with a header and inferred types), e.g. a label table."""
    require_path(path, key)
    listing = inspect_input(path, fmt, key, needed, hint, log=True)
    try:
        df = FORMATS[fmt].typed(_reader(spark, path, fmt), to_uri(path))
        if listing is not None and listing.widen:    # integer widths differ between files: read them as bigint
            schema = T.StructType([T.StructField(f.name, T.LongType(), f.nullable) if f.name in listing.widen else f
                                   for f in df.schema.fields])
            df = FORMATS[fmt].typed(_reader(spark, path, fmt).schema(schema), to_uri(path))
        return df
    except Exception as exc:  # AnalysisException and friends: say what could not be read
        raise InputError(f"{key} = {path!r} could not be read as {fmt}: {str(exc).splitlines()[0]}") from None


def read_input(spark: SparkSession, cfg: InputConfig) -> DataFrame:
    """Read ``cfg.path`` and return the normalised frame with ``_reason`` set on every faulty row."""
    require_path(cfg.path, "input.path")
    if cfg.format != "parquet":      # the Parquet reader inspects through read_table
        inspect_input(cfg.path, cfg.format, "input.path", _needed(cfg), _HINT, log=True)
    return _mark_faults(FORMATS[cfg.format].corpus(spark, cfg))


_HINT = "set input.id_column / input.text_column / input.passthrough"


def _needed(cfg: InputConfig) -> list[str]:
    return [cfg.id_column, cfg.text_column, *cfg.passthrough]


def _require_columns(columns: list[str], cfg: InputConfig, what: str) -> None:
    require_columns(columns, _needed(cfg), f"{what} {cfg.path!r}", _HINT)


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
    df = read_table(spark, cfg.path, "parquet", "input.path", _needed(cfg), _HINT)
    _require_columns(df.columns, cfg, "Parquet input")
    _check_types(df, cfg)
    return _normalise(df, cfg, F.lit(None), F.lit(None))


def _read_csv(spark: SparkSession, cfg: InputConfig) -> DataFrame:
    sep = "\t" if cfg.format == "tsv" else ","
    # multiLine: a quoted field may span lines (real exports do); the cost is that a file is read by one task
    opts = {"header": "true", "sep": sep, "escape": '"', "mode": "PERMISSIVE", "multiLine": "true",
            "columnNameOfCorruptRecord": "_corrupt_record"}
    header = _reader(spark, cfg.path, cfg.format).options(**opts).csv(to_uri(cfg.path)).columns  # header only
    _require_columns(header, cfg, cfg.format.upper())
    schema = T.StructType([T.StructField(c, T.StringType()) for c in header] +
                          [T.StructField("_corrupt_record", T.StringType())])
    _refuse_unterminated_quotes(spark, cfg)
    df = _reader(spark, cfg.path, cfg.format).options(**opts).schema(schema).csv(to_uri(cfg.path))
    bad = F.col("_corrupt_record").isNotNull()
    return _normalise(df, cfg, F.when(bad, _reason("malformed_record")), F.when(bad, F.col("_corrupt_record")))


def _refuse_unterminated_quotes(spark: SparkSession, cfg: InputConfig) -> None:
    """A file with an odd number of '"' has a quoted field that never closes: under multiLine the parser would read
    every record from that quote to the end of the file as one text (exit 0, one bogus row embedded). No record
    boundary can be trusted after it, so the run stops and names the file. Costs one extra pass over the text."""
    q = F.length("value") - F.length(F.regexp_replace("value", '"', ""))
    odd = (_reader(spark, cfg.path, cfg.format).text(to_uri(cfg.path))
           .select(F.input_file_name().alias("file"), q.alias("q"))
           .groupBy("file").agg(F.sum("q").alias("q")).where(F.col("q") % 2 == 1).collect())
    if odd:
        names = ", ".join(sorted(Path(r["file"].replace("file://", "")).name for r in odd))
        raise InputError(f"input.path = {cfg.path!r}: {names} has a quoted field that is never closed (an odd number "
                         "of '\"' characters); every record after it would be read as one text. Fix or re-export "
                         "the file (a quote inside a quoted field is written as \"\")")


def _read_jsonl(spark: SparkSession, cfg: InputConfig) -> DataFrame:
    """JSON lines, checked per record with Spark's variant type: a text that is a number or list is caught, not
    stringified. Blank lines are not records and are skipped."""
    raw = _reader(spark, cfg.path, "jsonl").text(to_uri(cfg.path)).where(F.trim(F.col("value")) != "")
    inferred = _reader(spark, cfg.path, "jsonl").json(to_uri(cfg.path)).schema
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


def no_visible_content(col):
    """True where a text has no visible content (``INVISIBLE`` only, or empty), as a Spark expression."""
    return F.length(F.regexp_replace(col, INVISIBLE, "")) == 0


def _mark_faults(df: DataFrame) -> DataFrame:
    """Fill ``_reason`` for null/empty/duplicate ids and null/invisible texts; parse faults already set take
    precedence. The id ``''`` is not an id: it is how CSV/TSV exports write a missing value (Spark and DuckDB read an
    empty CSV field as null), so it would not survive a round trip; it is ``empty_id``. Any other string is an id as
    it is (never trimmed: ``' 7'`` and ``'7'`` are two ids)."""
    dup = F.count(F.lit(1)).over(Window.partitionBy(C_ID)) > 1
    invalid = ~F.expr(f"is_valid_utf8({C_TEXT})")
    empty_id = F.lit(False)
    if isinstance(df.schema[C_ID].dataType, T.StringType):
        invalid = invalid | ~F.expr(f"is_valid_utf8({C_ID})")
        empty_id = F.col(C_ID) == ""
    reason = F.coalesce(
        F.col(C_REASON),
        F.when(F.col(C_ID).isNull(), _reason("null_id"))
        .when(empty_id, _reason("empty_id"))
        .when(F.col(C_TEXT).isNotNull() & invalid, _reason("invalid_utf8"))
        .when(F.col(C_TEXT).isNull(), _reason("null_text"))
        .when(no_visible_content(F.col(C_TEXT)), _reason("empty_text"))
        .when(dup, _reason("duplicate_id")))
    return df.withColumn(C_REASON, reason)


@dataclass(frozen=True)
class FormatReaders:
    """How one input format is read: as a typed table (label tables, SQL views), as the embed job's corpus (faults
    marked, nothing dropped), and by DuckDB (a table function; ``{path}`` is the quoted path or glob)."""

    typed: Callable[[Any, str], DataFrame]
    corpus: Callable[[SparkSession, InputConfig], DataFrame]
    duckdb: str
    extensions: tuple[str, ...]     # file names that hold this format in a folder (text formats: also + .gz/.bz2)


def _csv_typed(sep: str) -> Callable[[Any, str], DataFrame]:
    return lambda reader, uri: reader.options(header="true", inferSchema="true", sep=sep).csv(uri)


# The one table from an input format to its readers: a format is added here (and in ``Format``), nowhere else.
FORMATS: dict[str, FormatReaders] = {
    "parquet": FormatReaders(lambda reader, uri: reader.parquet(uri), _read_parquet, "read_parquet({path})",
                             (".parquet", ".parq", ".pq")),
    "jsonl": FormatReaders(lambda reader, uri: reader.json(uri), _read_jsonl,
                           "read_json({path}, format = 'newline_delimited')", (".jsonl", ".ndjson", ".json")),
    "csv": FormatReaders(_csv_typed(","), _read_csv, "read_csv({path}, header = true)", (".csv",)),
    "tsv": FormatReaders(_csv_typed("\t"), _read_csv, "read_csv({path}, header = true, delim = '\\t')",
                         (".tsv", ".tab")),
}
assert set(FORMATS) == set(get_args(Format))
