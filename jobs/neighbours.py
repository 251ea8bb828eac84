"""Nearest neighbours and near-duplicates over a published embedding table's binary codes.

    python -m jobs.neighbours --config conf/neighbours.yaml [--set key=value ...]

Publishes ``output.path`` -> a run folder with
- ``search/``: ``query_id, rank, id, hamming, similarity``: the k nearest table rows of each query (texts encoded
  with the table's own feature spec, or ids already in the table), ties broken by id; with ``search.rescore`` also
  ``cosine``: the binary top-``candidates`` re-ranked by the cosine of the query's float feature (a query given by id:
  its stored int8 vector) with each candidate's int8 vector (the table's ``embedding_int8`` column);
- ``duplicates/``: ``id_a, id_b, hamming, similarity``: every pair of rows within ``duplicates.radius`` bits, each
  pair once with ``id_a < id_b``;
- ``manifest.json`` with the counts.

Search: every corpus partition computes its local top-k for all queries (``search.kernels``; the queries travel as
packed bytes in the task closure), and a window over (hamming, id) keeps the global top-k. Rescored: the same for
the top-``candidates``, whose rows carry their int8 bytes; each candidate's cosine is computed row by row
(``search.kernels.cosine_rows``, the library's one cosine), and a window over (cosine desc, id) keeps the top-k. Near-duplicates: codes are
cut into radius + 1 bit blocks, so two codes within the radius share an identical block (pigeonhole); rows are
grouped by (block, value), candidate pairs are verified exactly, and a pair seen through several blocks is kept only
under the first block the two codes share, so no all-pairs comparison and no shuffle to deduplicate.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyarrow as pa

from encoder.schema import EMBEDDING, EMBEDDING_INT8, ID
from search.duplicates import pigeonhole_blocks
from search.index import DEFAULT_CANDIDATES
from search.queries import query_encoder
from encoder.table import PublishedTable, open_table
from encoder.typed_config import ConfigError, require_at_least
from jobs import publish
from jobs.common import SparkSettings, run_main, spark_session
from jobs.errors import InputError
from jobs.ingest import Format, read_table, require_columns
from jobs.tables import arrow_type, check_table, input_runs, open_embeddings, parquet_rows, spark_schema, \
    write_manifest, write_table

logger = logging.getLogger("jobs.neighbours")
QUERY_ID, RANK, HAMMING, SIMILARITY, ID_A, ID_B = "query_id", "rank", "hamming", "similarity", "id_a", "id_b"
COSINE = "cosine"


@dataclass(frozen=True)
class QueriesConfig:
    """The query table: one row per query, named by ``id_column``; either a text to encode (``text_column``) or the
    id of a row already in the embedding table whose stored code is the query (``table_id_column``)."""

    path: str
    format: Format = "csv"
    id_column: str = "query_id"
    text_column: str | None = "text"
    table_id_column: str | None = None

    def validate(self, source: str, prefix: str) -> None:
        if (self.text_column is None) == (self.table_id_column is None):
            raise ConfigError(source, f"{prefix}text_column", "set exactly one of text_column (query texts) and "
                              "table_id_column (ids of rows in the embedding table)")


@dataclass(frozen=True)
class SearchConfig:
    queries: QueriesConfig
    k: int = 10                              # neighbours per query
    model: str = "package"                   # encodes query texts; must reproduce the table's feature spec
    # true: the binary top-`candidates` of each query re-ranked by int8 cosine (needs the table's embedding_int8
    # column: embed with output.rescore: int8); auto (conf/neighbours.yaml): rescore when the table has the column
    rescore: bool | Literal["auto"] = False
    candidates: int = DEFAULT_CANDIDATES     # binary candidates per query that rescoring re-ranks (>= k)

    def validate(self, source: str, prefix: str) -> None:
        require_at_least(self, ("k",), 1, source, prefix)
        if self.candidates < self.k:
            raise ConfigError(source, f"{prefix}candidates", f"= {self.candidates}; expected >= search.k = {self.k} "
                              "(rescoring re-ranks the binary top-candidates)")


@dataclass(frozen=True)
class DuplicatesConfig:
    radius: int = 8                          # pairs within this many differing bits (of the code's 8 * n_bytes)


@dataclass(frozen=True)
class NeighboursConfig:
    embeddings: str = "out/embed"
    search: SearchConfig | None = None       # null: no search
    duplicates: DuplicatesConfig | None = None   # null: no near-duplicate pass
    output: publish.PublishConfig = field(default_factory=lambda: publish.PublishConfig(path="out/neighbours"))
    spark: SparkSettings = field(default_factory=lambda: SparkSettings(arrow_batch_rows=8192))

    def validate(self, source: str, prefix: str) -> None:
        if self.search is None and self.duplicates is None:
            raise ConfigError(source, f"{prefix}search", "and duplicates are both null; nothing to do")


def search_schema(id_type: pa.DataType, rescore: bool = False) -> pa.Schema:
    return pa.schema([pa.field(QUERY_ID, pa.string(), False), pa.field(RANK, pa.int32(), False),
                      pa.field(ID, id_type, False), pa.field(HAMMING, pa.int32(), False),
                      pa.field(SIMILARITY, pa.float32(), False),
                      *([pa.field(COSINE, pa.float32(), False)] if rescore else [])])


def use_rescore(cfg: SearchConfig, table: PublishedTable, embeddings: str) -> bool:
    """Whether this run rescores: ``search.rescore`` true needs the table's int8 column (else a ConfigError naming the
    setting, exit 2); ``auto`` rescores exactly when the table has it."""
    has = table.spec.rescore != "none"
    if cfg.rescore is True and not has:
        raise ConfigError("neighbours", "search.rescore", f"= true, but embeddings = {embeddings!r} has no "
                          f"{EMBEDDING_INT8} column (embedded with output.rescore = none); embed it with --set "
                          "output.rescore=int8, or set search.rescore=false (or auto)")
    return has if cfg.rescore == "auto" else bool(cfg.rescore)


def duplicates_schema(id_type: pa.DataType) -> pa.Schema:
    return pa.schema([pa.field(ID_A, id_type, False), pa.field(ID_B, id_type, False),
                      pa.field(HAMMING, pa.int32(), False), pa.field(SIMILARITY, pa.float32(), False)])


@publish.writes_output(lambda cfg: cfg.output.path)   # a read-only or full output is OutputError (exit 9)
def run(cfg: NeighboursConfig) -> dict:
    t0 = time.perf_counter()
    table = open_table(cfg.embeddings)       # pinned: one run's files, read whole whatever is published meanwhile
    if table.spec.quantization != "binary":
        raise ConfigError("neighbours", "embeddings", f"= {cfg.embeddings!r} holds {table.spec.quantization} codes; "
                          "Hamming search needs a binary table (encoder.quantization: binary)")
    try:                                      # a radius the codes cannot honour fails before Spark starts
        blocks = pigeonhole_blocks(8 * table.spec.n_bytes, cfg.duplicates.radius) if cfg.duplicates else None
    except ValueError as exc:
        raise ConfigError("neighbours", "duplicates.radius", str(exc).removeprefix("radius ")) from None
    rescore = use_rescore(cfg.search, table, cfg.embeddings) if cfg.search else False
    spark = spark_session(cfg.spark, "neighbours")
    emb = open_embeddings(spark, table, (ID, EMBEDDING, *([EMBEDDING_INT8] if rescore else [])))
    id_type = arrow_type(emb.df.schema[ID].dataType)
    run_id, staging = publish.begin_run(cfg.output.path)
    facts: dict = {"embeddings": str(table.root), "input_runs": input_runs(embeddings=table),
                   "rows": parquet_rows(table.files),
                   "feature_spec_fingerprint": table.spec.fingerprint, "bits": table.spec.dim}
    if cfg.search:
        query_ids, codes, vectors = queries(spark, cfg.search.queries, table, emb.df, cfg.search.model, rescore)
        write_table(search(emb.df, query_ids, codes, cfg.search.k, table, id_type, vectors, cfg.search.candidates),
                    staging / "search", cfg.output.compression)
        check_table(staging / "search", search_schema(id_type, rescore))
        found = parquet_rows(staging / "search")
        expected = len(query_ids) * min(cfg.search.k, facts["rows"])
        if found != expected:
            raise RuntimeError(f"search wrote {found} rows, expected {expected} (queries x k); not publishing")
        facts["search"] = {"queries": len(query_ids), "k": cfg.search.k, "rows": found,
                           "queries_from": "texts" if cfg.search.queries.text_column else "table ids"}
        if rescore:
            facts["search"]["rescore"] = {"column": EMBEDDING_INT8, "candidates": cfg.search.candidates}
    if cfg.duplicates and blocks is not None:
        pairs = duplicates(emb.df.select(ID, EMBEDDING), cfg.duplicates.radius, blocks, table, id_type)
        write_table(pairs, staging / "duplicates", cfg.output.compression)
        check_table(staging / "duplicates", duplicates_schema(id_type))
        facts["duplicates"] = {"radius": cfg.duplicates.radius, "blocks": [list(b) for b in blocks],
                               "pairs": parquet_rows(staging / "duplicates")}
    manifest = write_manifest(staging, run_id, t0, facts)
    out = publish.publish(cfg.output.path, staging, cfg.output.keep_runs)
    logger.info("neighbours: rows=%d search=%s duplicates=%s seconds=%.1f output=%s run=%s", facts["rows"],
                facts.get("search"), facts.get("duplicates", {}).get("pairs"), manifest["seconds"], out, run_id)
    return manifest


# -- queries ----------------------------------------------------------------------------------------------------
def queries(spark, cfg: QueriesConfig, table: PublishedTable, corpus, model: str, rescore: bool = False
            ) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """The query table -> (query ids as strings, codes uint8[q, n_bytes], and with ``rescore`` the query vectors
    float32[q, dim]: query texts' float features, or a table row's stored int8 vector); bad rows are errors naming
    the row."""
    from pyspark.sql import functions as F

    df = read_table(spark, cfg.path, cfg.format, "search.queries.path")
    value = cfg.text_column or cfg.table_id_column
    require_columns(df.columns, [cfg.id_column, value], f"query table {cfg.path!r}",
                    "set search.queries.id_column / text_column / table_id_column")
    rows = df.select(F.col(cfg.id_column).cast("string").alias("q"), F.col(value).alias("v")).collect()
    if not rows:
        raise InputError(f"query table {cfg.path!r} has no rows")
    qids = [r["q"] for r in rows]
    for i, r in enumerate(rows):
        if r["q"] is None or r["v"] is None or (isinstance(r["v"], str) and not r["v"].strip()):
            raise InputError(f"query table {cfg.path!r} row {i + 1}: {cfg.id_column} = {r['q']!r}, {value} = "
                             f"{r['v']!r}; every query needs an id and a non-empty {value}")
    dup = sorted({q for q in qids if qids.count(q) > 1})
    if dup:
        raise InputError(f"query table {cfg.path!r}: {cfg.id_column} values {dup[:5]} occur more than once")
    spec = table.spec
    if cfg.text_column:
        vectors = query_encoder(spec, model).features([r["v"] for r in rows])
        return qids, spec.encode_features(vectors), vectors if rescore else None
    wanted = [r["v"] for r in rows]
    cols = [EMBEDDING, *([EMBEDDING_INT8] if rescore else [])]
    found = {r[ID]: [bytes(r[c]) for c in cols] for r in corpus.where(F.col(ID).isin(wanted)).collect()}
    missing = [v for v in wanted if v not in found]
    if missing:
        raise InputError(f"query table {cfg.path!r}: {len(missing)} {cfg.table_id_column} value(s) are not ids of "
                         f"the embedding table, e.g. {missing[:5]}")
    stored = [np.frombuffer(b"".join(found[v][i] for v in wanted), np.uint8).reshape(len(wanted), -1)
              for i in range(len(cols))]
    return qids, stored[0], spec.decode_rescore(stored[1]) if rescore else None


# -- search -----------------------------------------------------------------------------------------------------
def search(corpus, query_ids: list[str], codes: np.ndarray, k: int, table: PublishedTable, id_type: pa.DataType,
           vectors: np.ndarray | None = None, candidates: int = DEFAULT_CANDIDATES):
    """Corpus (id, embedding[, embedding_int8]) -> the global top-k of each query, as a DataFrame with
    ``search_schema``; with ``vectors`` (the queries' float vectors), the global binary top-``candidates`` rescored
    by int8 cosine."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rescore = vectors is not None
    fields = [pa.field("q", pa.int32(), False), pa.field(ID, id_type, False), pa.field(HAMMING, pa.int32(), False),
              pa.field(SIMILARITY, pa.float32(), False)]
    local = pa.schema(fields + ([pa.field(EMBEDDING_INT8, pa.binary(), False)] if rescore else []))
    first = candidates if rescore else k
    fn = partial(_local_top_k, codes=codes.tobytes(), n_queries=len(codes), k=first, spec=table.spec, schema=local)
    ranked = (corpus.mapInArrow(fn, spark_schema(local))
              .withColumn(RANK, F.row_number().over(Window.partitionBy("q").orderBy(HAMMING, ID)))
              .where(F.col(RANK) <= first))
    out = [HAMMING, SIMILARITY]
    if rescore:
        scored = pa.schema(fields + [pa.field(COSINE, pa.float32(), False), pa.field("_cos", pa.float64(), False)])
        fn = partial(_cosines, vectors=np.ascontiguousarray(vectors, np.float32).tobytes(), n_queries=len(codes),
                     spec=table.spec, schema=scored)
        ranked = (ranked.drop(RANK).mapInArrow(fn, spark_schema(scored))
                  .withColumn(RANK, F.row_number().over(Window.partitionBy("q").orderBy(F.col("_cos").desc(), ID)))
                  .where(F.col(RANK) <= k))
        out.append(COSINE)
    names = F.array(*[F.lit(q) for q in query_ids])
    return (ranked.select(F.element_at(names, F.col("q") + 1).alias(QUERY_ID), F.col(RANK).cast("int"), ID, *out)
            .repartition(1).sortWithinPartitions(QUERY_ID, RANK))


def _local_top_k(batches, codes, n_queries, k, spec, schema):
    from jobs.worker import local_top_k

    return local_top_k(batches, np.frombuffer(codes, np.uint8).reshape(n_queries, -1), k, spec, schema)


def _cosines(batches, vectors, n_queries, spec, schema):
    from jobs.worker import candidate_cosines

    return candidate_cosines(batches, np.frombuffer(vectors, np.float32).reshape(n_queries, -1), spec, schema)


# -- near-duplicates ----------------------------------------------------------------------------------------------
def duplicates(corpus, radius: int, blocks: list[tuple[int, int]], table: PublishedTable, id_type: pa.DataType):
    """Corpus (id, embedding) -> every pair within ``radius`` bits, once, as a DataFrame with ``duplicates_schema``."""
    from pyspark.sql import functions as F

    keyed_schema = pa.schema([pa.field(ID, id_type, False), pa.field(EMBEDDING, pa.binary(), False),
                              pa.field("block", pa.int32(), False), pa.field("key", pa.binary(), False)])
    keyed = corpus.mapInArrow(partial(_keys, blocks=blocks, spec=table.spec, schema=keyed_schema),
                              spark_schema(keyed_schema))
    a, b = keyed.alias("a"), keyed.alias("b")
    candidates = a.join(b, (F.col("a.block") == F.col("b.block")) & (F.col("a.key") == F.col("b.key"))
                        & (F.col(f"a.{ID}") < F.col(f"b.{ID}"))).select(
        F.col(f"a.{ID}").alias(ID_A), F.col(f"b.{ID}").alias(ID_B), F.col("a.block").alias("block"),
        F.col(f"a.{EMBEDDING}").alias("code_a"), F.col(f"b.{EMBEDDING}").alias("code_b"))
    schema = duplicates_schema(id_type)
    fn = partial(_verify, radius=radius, blocks=blocks, spec=table.spec, schema=schema)
    return candidates.mapInArrow(fn, spark_schema(schema)).repartition(1).sortWithinPartitions(ID_A, ID_B)


def _keys(batches, blocks, spec, schema):
    from jobs.worker import block_rows

    return block_rows(batches, blocks, spec, schema)


def _verify(batches, radius, blocks, spec, schema):
    from jobs.worker import verify_pairs

    return verify_pairs(batches, radius, blocks, spec, schema)


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv, "neighbours", "conf/neighbours.yaml", NeighboursConfig)


if __name__ == "__main__":
    sys.exit(main())
