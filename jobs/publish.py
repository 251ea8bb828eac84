"""Atomic publication: each run writes its own folder; the output path is a symlink swapped in one rename.

Layout: ``<path>`` -> ``<path>.runs/<run_id>/``. Readers that open ``<path>`` see either the previous complete run
or the new complete run, never a half-written one; a failed or killed run leaves ``<path>`` untouched. The last
``keep_runs`` published runs stay on disk for rollback (re-point the symlink).
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from encoder.typed_config import ConfigError

logger = logging.getLogger(__name__)


Compression = Literal["zstd", "snappy", "gzip", "none"]


@dataclass(frozen=True)
class PublishConfig:
    """Where a job publishes and how many earlier runs it keeps."""

    path: str                                # a symlink to the newest complete run
    keep_runs: int = 2                       # published runs kept for rollback (current included)
    compression: Compression = "zstd"        # Parquet codec

    def validate(self, source: str, prefix: str) -> None:
        if self.keep_runs < 1:
            raise ConfigError(source, f"{prefix}keep_runs", f"= {self.keep_runs}; expected >= 1")
        if "://" in self.path and not self.path.startswith("file://"):
            raise ConfigError(source, f"{prefix}path", f"= {self.path!r}; atomic publication needs a local or "
                              "mounted POSIX path (symlink swap)")


def runs_dir(output: Path) -> Path:
    return output.parent / f"{output.name}.runs"


def begin_run(output: str | Path) -> tuple[str, Path]:
    """Create a fresh staging folder for this run; refuse an output path this tool did not publish."""
    out = Path(output).absolute()
    if out.exists() and not out.is_symlink():
        raise FileExistsError(f"output path {out} exists and is not a table published by this tool (a symlink into "
                              f"{runs_dir(out).name}/); move it away or choose another output.path")
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    staging = runs_dir(out) / run_id
    staging.mkdir(parents=True)
    return run_id, staging


def publish(output: str | Path, staging: Path, keep_runs: int = 2) -> Path:
    """Point ``output`` at ``staging`` atomically (symlink + rename), then prune old runs beyond ``keep_runs``."""
    out = Path(output).absolute()
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.link"
    os.symlink(os.path.relpath(staging, out.parent), tmp)
    os.replace(tmp, out)  # atomic on POSIX: readers see the old target or the new one
    prune(out, keep_runs)
    return out


def current_run(output: str | Path) -> Path | None:
    out = Path(output).absolute()
    return out.resolve() if out.is_symlink() else None


def previous_run(output: str | Path) -> Path | None:
    """The published run before the current one (kept by ``keep_runs`` >= 2), e.g. to compare two prediction runs."""
    current = current_run(output)
    root = runs_dir(Path(output).absolute())
    if current is None or not root.is_dir():
        return None
    older = sorted(p for p in root.iterdir() if p.is_dir() and (p / "manifest.json").exists() and p.name < current.name)
    return older[-1] if older else None


def prune(output: Path, keep_runs: int) -> None:
    """Delete run folders older than the newest ``keep_runs`` published ones (never the current one)."""
    root = runs_dir(output)
    current = current_run(output)
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    published = [p for p in runs if (p / "manifest.json").exists()]
    keep = set(published[-max(keep_runs, 1):]) | ({current} if current else set())
    for p in runs:
        # only runs older than the current one: a newer folder may be a run still in progress
        if p not in keep and current is not None and p.name < current.name:
            shutil.rmtree(p, ignore_errors=True)
            logger.info("pruned old run %s", p)
