"""The embedding table: Arrow batches in and out, and opening a published table (spec, manifest, data files).

Pure functions over batches, plus ``open_table``, which reads only metadata (footers and JSON), never the data.

A read is pinned to one run: ``published_run`` resolves a published output (a symlink to ``<path>.runs/<run_id>/``)
to its run folder once, and ``open_table`` lists and checks only that folder's files, so a run published while a job
reads cannot mix into the read (the way a Delta Lake query reads one table version). Readers pass ``files`` (absolute
paths inside the run folder), never the published link, to Spark, pyarrow or DuckDB, and record ``run`` in their
manifest.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .artifacts import ArtifactError
from .encode import FeatureExtractor
from .hashing import text_sha256
from .quantize import codes_to_column
from .schema import EMBEDDING, EMBEDDING_INT8, ID, SPEC_METADATA_KEY
from .spec import FeatureSpec

SPARK_ROW_METADATA = b"org.apache.spark.sql.parquet.row.metadata"
EMBEDDINGS_DIR, QUARANTINE_DIR, MANIFEST = "embeddings", "quarantine", "manifest.json"


class TableError(ArtifactError):
    """A published table is not what it promises (a file of another spec, repeated ids, a missing part)."""


@dataclass(frozen=True)
class PublishedRun:
    """A published output folder resolved once: ``path`` as named (absolute; usually the published symlink) and
    ``root``, the run folder it pointed to at that moment (symlinks resolved). Read ``root``, never ``path``: the
    link may be switched to another run at any time, the run folder's files do not change."""

    path: Path
    root: Path

    @property
    def run(self) -> str:
        """The run id (the run folder's name, as ``jobs.publish.begin_run`` names it)."""
        return self.root.name

    def record(self) -> dict[str, str]:
        """What a reader writes into its own manifest (``input_runs``): the path it was given and the run it read."""
        return {"path": str(self.path), "run": self.run, "root": str(self.root)}


def published_run(folder: str | Path) -> PublishedRun:
    """Resolve a published output folder (embed, apply_heads, neighbours, train_heads) to its run folder, once."""
    path = Path(folder).absolute()
    return PublishedRun(path, path.resolve())


@dataclass(frozen=True)
class PublishedTable:
    """A published embed output, pinned to one run: ``root`` is the run folder the published path resolved to when
    it was opened; its feature spec, manifest and data files (absolute paths inside ``root``, in name order)."""

    root: Path
    spec: FeatureSpec
    manifest: dict
    files: tuple[Path, ...]
    path: Path | None = None          # the folder as named (absolute), e.g. the published symlink

    @property
    def data(self) -> Path:
        return self.root / EMBEDDINGS_DIR

    @property
    def run(self) -> str:
        """The id of the run this table was pinned to."""
        return self.root.name

    def record(self) -> dict[str, str]:
        """The manifest entry of a job that read this table (``input_runs``)."""
        return PublishedRun(self.path or self.root, self.root).record()


def read_manifest(root: Path) -> dict:
    """A published run's ``manifest.json`` as a dict; missing, not JSON or not an object is a ``TableError``."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise TableError(f"{path.parent} has no {MANIFEST}; a published run always has one (was it copied in part, "
                         "or is it not a published output?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TableError(f"{path} is not JSON ({exc}); the manifest was truncated or edited") from None
    if not isinstance(manifest, dict):
        raise TableError(f"{path} holds a JSON {type(manifest).__name__}, not an object; the manifest was edited")
    return manifest


def check_counts(manifest_path: Path, stated, what: str, folder: Path, files: Sequence[Path] | None = None) -> int:
    """A manifest's row count (``stated``, named ``what``, e.g. ``rows.written``) equals the rows in the Parquet
    footers of ``folder`` (or of ``files``); else a ``TableError``. Returns the footer count."""
    listed = sorted(folder.glob("*.parquet")) if files is None else files
    try:
        found = sum(pq.read_metadata(str(f)).num_rows for f in listed)
    except (OSError, ValueError) as exc:
        raise TableError(f"{folder}: a Parquet footer cannot be read ({exc})") from None
    if not isinstance(stated, int) or isinstance(stated, bool) or stated != found:
        raise TableError(f"{manifest_path}: {what} = {stated!r}, but the Parquet footers of {folder} hold "
                         f"{found:,} rows; the manifest and the files disagree (a file added, removed or edited)")
    return found


def open_table(folder: str | Path) -> PublishedTable:
    """Open a published embedding folder, pinned to the run it points to now: its spec, its manifest (present, JSON,
    and with row counts equal to the Parquet footers), and every data file checked to carry that spec.

    The folder is resolved to its run folder once; everything after reads inside that run folder, so a run published
    meanwhile never mixes in. A Parquet file copied in from a table of another spec (even one with the same byte
    width) is refused here, by its footer's spec fingerprint, before any row is read.
    """
    pinned = published_run(folder)
    root = pinned.root
    if not (root / EMBEDDINGS_DIR).is_dir():
        raise TableError(f"embeddings = {str(folder)!r} is not a published embed output (no {EMBEDDINGS_DIR}/ folder)")
    try:
        spec = FeatureSpec.load(root)
    except (OSError, ValueError) as exc:
        raise TableError(f"{root}: {exc}") from None
    manifest = read_manifest(root)
    files = tuple(sorted((root / EMBEDDINGS_DIR).glob("*.parquet")))
    if not files:
        raise TableError(f"{root / EMBEDDINGS_DIR} holds no Parquet files")
    for f in files:
        try:
            found = spec_from_parquet(f).get("fingerprint")
        except (OSError, ValueError) as exc:
            raise TableError(str(exc)) from None
        if found != spec.fingerprint:
            raise TableError(f"{f} was written with feature spec {str(found)[:16]}…, but the table's spec is "
                             f"{spec.fingerprint[:16]}…; a file of another table was copied in")
    rows = manifest.get("rows")
    if not isinstance(rows, dict):
        raise TableError(f"{root / MANIFEST} has no rows counts (rows.written, rows.quarantined); not an embed "
                         "manifest, or it was edited")
    check_counts(root / MANIFEST, rows.get("written"), "rows.written", root / EMBEDDINGS_DIR, files)
    check_counts(root / MANIFEST, rows.get("quarantined"), "rows.quarantined", root / QUARANTINE_DIR)
    return PublishedTable(root, spec, manifest, files, pinned.path)


def encode_batch(batch: pa.RecordBatch, extractor: FeatureExtractor, spec: FeatureSpec, id_column: str,
                 text_column: str, passthrough: Sequence[str], schema: pa.Schema) -> pa.RecordBatch:
    """One input batch (id, text, passthrough...) -> one embedding-table batch with ``schema``, rows in order; with
    the rescoring column when ``schema`` has it (both codes from the same features, by the one quantizer)."""
    texts = batch.column(text_column).to_pylist()
    f = extractor.features(texts)
    codes = [codes_to_column(spec.encode_features(f.values))]
    if EMBEDDING_INT8 in schema.names:
        codes.append(codes_to_column(spec.encode_rescore(f.values)))
    arrays = [batch.column(id_column).cast(schema.field(ID).type), *codes, pa.array(text_sha256(texts), pa.string()),
              pa.array(f.n_tokens, pa.int32()), pa.array(f.truncated, pa.bool_())]
    arrays += [batch.column(c) for c in passthrough]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def spec_from_parquet(path: str | Path) -> dict:
    """Read the spec JSON that the embed job stored in a Parquet file's key-value metadata (Spark row metadata)."""
    meta = pq.read_metadata(str(path)).metadata or {}
    if SPARK_ROW_METADATA not in meta:
        raise ValueError(f"{path}: no Spark row metadata; not written by the embed job")
    for f in json.loads(meta[SPARK_ROW_METADATA])["fields"]:
        if f["name"] == EMBEDDING and SPEC_METADATA_KEY in f.get("metadata", {}):
            return json.loads(f["metadata"][SPEC_METADATA_KEY])
    raise ValueError(f"{path}: the embedding column carries no feature spec metadata")

