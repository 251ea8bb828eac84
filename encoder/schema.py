"""The one schema module: the embedding and quarantine tables as pyarrow schemas, with a format version.

Spark schemas are derived from these (``jobs/``), so the table layout is written down in exactly one place.
"""
from __future__ import annotations

from typing import Literal, get_args

import pyarrow as pa

TABLE_FORMAT_VERSION = 1

# Why a row was quarantined instead of encoded: the Literal names them, QUARANTINE_REASON_DOCS says what each means
# (the data dictionary and docs print it), and the reader names a reason only through ``quarantine_reason``.
QuarantineReason = Literal["null_id", "empty_id", "duplicate_id", "null_text", "empty_text", "text_not_string",
                           "malformed_record", "invalid_utf8", "id_wrong_type"]
QUARANTINE_REASONS: tuple[str, ...] = get_args(QuarantineReason)
QUARANTINE_REASON_DOCS = {
    "null_id": "the id column is null",
    "empty_id": "the id is the empty string '' (how CSV/TSV exports write a missing value; any other string is an id "
                "as it is, never trimmed)",
    "duplicate_id": "the id occurs more than once; every copy is held back, since none is known to be right",
    "null_text": "the text column is null (or the field is absent in a JSONL record)",
    "empty_text": "the text has no visible content: empty, or only whitespace, control characters (NUL...), "
                  "format characters (zero-width space, soft hyphen, BOM...) and combining marks",
    "text_not_string": "JSONL: the text field holds a number, list, object or boolean",
    "malformed_record": "JSONL/CSV: the line could not be parsed into the declared columns",
    "invalid_utf8": "the id or the text holds bytes that are not valid UTF-8",
    "id_wrong_type": "JSONL: the id's JSON type is not the id column's (a float or boolean id is never coerced)",
}
assert set(QUARANTINE_REASON_DOCS) == set(QUARANTINE_REASONS)


def quarantine_reason(name: QuarantineReason) -> str:
    """A quarantine reason, checked against the one list (a typo fails when the reader is built, not in a table)."""
    if name not in QUARANTINE_REASONS:
        raise ValueError(f"quarantine reason {name!r}; expected one of {', '.join(map(repr, QUARANTINE_REASONS))}")
    return name

ID_TYPES: tuple[pa.DataType, ...] = (pa.string(), pa.int64(), pa.int32())

# Column names of the embedding table (before passthrough columns).
ID, EMBEDDING, TEXT_SHA256, N_TOKENS, TRUNCATED = "id", "embedding", "text_sha256", "n_tokens", "truncated"
EMBEDDING_INT8 = "embedding_int8"   # the optional rescoring column (output.rescore: int8), right after the code
CORE_COLUMNS = (ID, EMBEDDING, EMBEDDING_INT8, TEXT_SHA256, N_TOKENS, TRUNCATED)
TEXT, REASON, SOURCE = "text", "reason", "source"          # quarantine table columns besides ID
# What each column means, for data dictionaries (``jobs/describe.py``).
COLUMN_DOCS = {
    ID: "the input row's id (unique in the table)",
    EMBEDDING: "the text's code under the table's feature spec (see below), n_bytes bytes per row",
    EMBEDDING_INT8: "the same feature as one signed byte per dimension (int8 with the spec's per-dimension rescore "
                    "scales), dim bytes per row: re-ranks Hamming candidates by cosine (`int8_cosine(a, b)` in "
                    "`python -m jobs.sql`, `search.rescore` in the neighbours job); heads do not read it",
    TEXT_SHA256: "sha256 (hex) of the text's UTF-8 bytes: joins back to the source, spots repeated texts",
    N_TOKENS: "tokens in the text before truncation, special tokens included",
    TRUNCATED: "true when part of the text was not encoded (longer than max_length, or cut by max_chunks)",
    TEXT: "the text as read (the embedding table: only with input.keep_text: true)",
    REASON: "why the row was held back (one of the quarantine reasons)",
    SOURCE: "the raw record, for JSONL/CSV lines that could not be parsed",
}
SPEC_METADATA_KEY = "feature_spec"  # field metadata on the embedding column: spec JSON + fingerprint


def embedding_schema(id_type: pa.DataType = pa.string(), passthrough: pa.Schema | None = None,
                     rescore: bool = False) -> pa.Schema:
    """id, embedding (bytes: spec.n_bytes per row), [embedding_int8 (bytes: dim per row) when ``rescore``],
    text_sha256 (hex), n_tokens, truncated, then passthrough.

    Both code columns are Arrow/Spark ``binary`` with a width the job checks on every row (Spark has no fixed-size
    binary type); Parquet's PLAIN encoding adds a 4-byte length per value, which zstd all but removes."""
    if id_type not in ID_TYPES:
        raise TypeError(f"id column type {id_type} is not supported; expected one of {', '.join(map(str, ID_TYPES))}")
    fields = [
        pa.field(ID, id_type, nullable=False),
        pa.field(EMBEDDING, pa.binary(), nullable=False),
        *([pa.field(EMBEDDING_INT8, pa.binary(), nullable=False)] if rescore else []),
        pa.field(TEXT_SHA256, pa.string(), nullable=False),   # sha256 of the UTF-8 text, to join back or dedupe
        pa.field(N_TOKENS, pa.int32(), nullable=False),       # tokens before truncation, special tokens included
        pa.field(TRUNCATED, pa.bool_(), nullable=False),      # part of the text was not encoded (truncate: longer
                                                              # than max_length; chunks: cut by max_chunks)
    ]
    for f in passthrough or []:
        if f.name in CORE_COLUMNS:
            raise ValueError(f"passthrough column {f.name!r} clashes with a column the job writes")
        fields.append(f)
    return pa.schema(fields)


def quarantine_schema() -> pa.Schema:
    """One row per held-back input row: the id and text as found (stringified), and why."""
    return pa.schema([
        pa.field(ID, pa.string(), nullable=True),
        pa.field(TEXT, pa.string(), nullable=True),
        pa.field(REASON, pa.string(), nullable=False),        # one of QUARANTINE_REASONS
        pa.field(SOURCE, pa.string(), nullable=True),         # the raw record, for JSONL/CSV parse failures
    ])
