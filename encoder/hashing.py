"""The project's hashes, one place each: a file's sha256, a text's sha256, and the id hash behind every split.

The split rule (train / validation by a hash of the id, and "the first n rows" caps) is ``id_hash``: the first
32 bits of sha256 over the id as text. Spark computes the same number with its built-in functions
(``jobs.tables.id_hash_column``: ``conv(substring(sha2(cast(id as string), 256), 1, 8), 16, 10)``), so the head
trainer, the encoder trainer, the embed job's calibration sample and the studies all pick the same rows from the same
table, in Python or in Spark.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

ID_BUCKETS = 100   # id_bucket is 0..99: validation takes the ids whose bucket is below val_percent


def file_sha256(path: str | Path, h: "hashlib._Hash | None" = None) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (``h``: feed an existing digest instead and return it)."""
    digest = h if h is not None else hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_sha256(texts: Iterable[str]) -> list[str]:
    """Hex sha256 of each text's UTF-8 bytes: a stable content key to join back to the source or spot repeats."""
    return [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]


def id_hash(ids: Sequence) -> np.ndarray:
    """int64[n] in 0..2^32-1: the first 8 hex digits of sha256(str(id)). Deterministic across runs, machines and
    engines; ``str`` of an integer id is its decimal digits, as Spark's cast to string gives them."""
    return np.fromiter((int(hashlib.sha256(str(i).encode("utf-8")).hexdigest()[:8], 16) for i in ids),
                       dtype=np.int64, count=len(ids))


def id_bucket(ids: Sequence) -> np.ndarray:
    """int64[n] in 0..99: ``id_hash % 100``, the bucket the split rule compares with ``val_percent``."""
    return id_hash(ids) % ID_BUCKETS
