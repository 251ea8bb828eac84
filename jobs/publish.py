"""Atomic publication: each run writes its own folder; the output path is a symlink swapped in one rename.

Layout: ``<path>`` -> ``<path>.runs/<run_id>/``. Readers that open ``<path>`` see either the previous complete run
or the new complete run, never a half-written one; a failed or killed run leaves ``<path>`` untouched. The last
``keep_runs`` published runs stay on disk for rollback (re-point the symlink).

One run at a time per output: ``begin_run`` takes an exclusive ``flock`` on ``<path>.runs/.lock`` (the kernel drops
it when the process dies, so a killed run never holds it), and a second run on the same path refuses at start with
``OutputLockedError``. Holding the lock, a run knows every unpublished run folder is a dead run's and removes it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from encoder.typed_config import ConfigError, require_at_least

logger = logging.getLogger(__name__)


Compression = Literal["zstd", "snappy", "gzip", "none"]


@dataclass(frozen=True)
class PublishConfig:
    """Where a job publishes and how many earlier runs it keeps."""

    path: str                                # a symlink to the newest complete run
    keep_runs: int = 2                       # published runs kept for rollback (current included)
    compression: Compression = "zstd"        # Parquet codec

    def validate(self, source: str, prefix: str) -> None:
        require_at_least(self, ("keep_runs",), 1, source, prefix)
        if "://" in self.path and not self.path.startswith("file://"):
            raise ConfigError(source, f"{prefix}path", f"= {self.path!r}; atomic publication needs a local or "
                              "mounted POSIX path (symlink swap)")


def runs_dir(output: Path) -> Path:
    return output.parent / f"{output.name}.runs"


class OutputError(OSError):
    """The output cannot be written (a read-only or full filesystem, no permission): nothing was published and the
    previous good output is untouched. Its message names the path."""


class OutputLockedError(RuntimeError):
    """Another live run is writing the same output path."""


_LOCKS: dict[Path, int] = {}     # output -> the lock file descriptor this process holds
_BEGUN: dict[Path, str] = {}     # output -> the id of the run this process began last (for the run log)
RUN_LOG = "runs.jsonl"


def begin_run(output: str | Path) -> tuple[str, Path]:
    """Lock the output for this run, remove dead runs' folders, create a fresh staging folder; refuse an output path
    this tool did not publish."""
    out = Path(output).absolute()
    if out.exists() and not out.is_symlink():
        raise FileExistsError(f"output path {out} exists and is not a table published by this tool (a symlink into "
                              f"{runs_dir(out).name}/); move it away or choose another output.path")
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    lock(out, run_id)
    _BEGUN[out] = run_id
    remove_dead_runs(out)
    staging = runs_dir(out) / run_id
    staging.mkdir(parents=True)
    return run_id, staging


def lock(out: Path, run_id: str) -> None:
    """Take (or, in the process that already holds it, keep) the output's run lock; record who holds it."""
    root = runs_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".lock"
    fd = _LOCKS.get(out)
    if fd is None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLockedError(f"output.path {out} is being written by another run ({holder}); wait for it to "
                                    "finish or stop it (a run that died holds no lock)") from None
        _LOCKS[out] = fd
    info = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def log_run(output: str | Path, record: dict) -> Path:
    """Append one JSON line per finished run (published or failed) to ``<path>.runs/runs.jsonl``: what a monitor
    reads. The record gets the id of the run this process began on that output, when it got that far."""
    out = Path(output).absolute()
    root = runs_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    record = {"run_id": _BEGUN.pop(out, None), **record}
    with open(root / RUN_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
    return root / RUN_LOG


def unlock(output: str | Path) -> None:
    fd = _LOCKS.pop(Path(output).absolute(), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def remove_dead_runs(out: Path) -> None:
    """With the lock held, a run folder without a manifest belongs to a run that died or failed: remove it."""
    current = current_run(out)
    for p in runs_dir(out).iterdir():
        if p.is_dir() and p != current and not (p / "manifest.json").exists():
            shutil.rmtree(p, ignore_errors=True)
            logger.info("removed the folder of a run that did not finish: %s", p)


def publish(output: str | Path, staging: Path, keep_runs: int = 2) -> Path:
    """Point ``output`` at ``staging`` atomically (symlink + rename), then prune old runs beyond ``keep_runs``."""
    out = Path(output).absolute()
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.link"
    os.symlink(os.path.relpath(staging, out.parent), tmp)
    os.replace(tmp, out)  # atomic on POSIX: readers see the old target or the new one
    prune(out, keep_runs)
    unlock(out)
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
