"""Versioned JSON artifacts (``feature_spec.json``, ``head.json``): the one reader that checks they exist and that
this code reads their format version."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ArtifactError(ValueError):
    """A stored artifact (a published table, a head folder, a manifest) is not what it promises: missing, truncated,
    edited, or its parts disagree. Its message names the file and what is wrong."""


def read_versioned_json(path: Path, format_version: int | tuple[int, ...], what: str) -> dict[str, Any]:
    """The JSON object at ``path``; a missing file or a ``format_version`` this code does not read is an error."""
    versions = (format_version,) if isinstance(format_version, int) else format_version
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path.parent} ({path.name} missing)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format_version") not in versions:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: format_version = {found!r}; this code reads {' or '.join(map(str, versions))}")
    return meta
