"""Atomic publication: each run writes its own folder; the output path is a symlink swapped in one rename.

Layout: ``<path>`` -> ``<path>.runs/<run_id>/``. Readers that open ``<path>`` see either the previous complete run
or the new complete run, never a half-written one; a failed or killed run leaves ``<path>`` untouched. The last
``keep_runs`` published runs stay on disk for rollback (re-point the symlink).

One run at a time per output: ``begin_run`` takes an exclusive ``flock`` on ``<path>.runs/.lock`` (the kernel drops
it when the process dies, so a killed run never holds it), and a second run on the same path refuses at start with
``OutputLockedError``. Holding the lock, a run knows every unpublished run folder is a dead run's and removes it.

An output that cannot be written (a read-only or full filesystem, no permission, a file where a folder must be) is
``OutputError`` (exit 9): one line naming the path; the published table is untouched, since nothing is swapped until
the run folder is complete. ``begin_run`` and ``publish`` raise it themselves; a job wraps its run in
``output_errors`` so the writes in between (Python's and Spark's) are reported the same way.

The run log ``<path>.runs/runs.jsonl`` gets each record whole or not at all (``log_run``).
"""
from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import re
import shutil
import socket
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, TypeVar

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


# errno values that mean "this output cannot be written" (not a bug of the job): with a file name, it must be the
# output's own (its runs folder, its link, a folder above it being created); ENOSPC and friends need no name.
_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.ENOTDIR}
_NAMELESS_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# The same faults as the JVM words them when Spark writes (java.io.IOException / FileNotFoundException, Hadoop).
_JAVA_WRITE_FAULTS = ("No space left on device", "Disk quota exceeded", "File too large", "Read-only file system",
                      "Permission denied", "Not a directory", "Mkdirs failed to create")
_JAVA_NAMELESS = _JAVA_WRITE_FAULTS[:4]


def _owned_by(out: Path, name: str | bytes | None) -> bool:
    """``name`` is the output path, lies in its runs folder, is its temporary link, or is a folder above it."""
    if name is None:
        return False
    p = Path(os.fsdecode(name)).absolute()
    root = runs_dir(out)
    link = p.parent == out.parent and p.name.startswith(f".{out.name}.")
    return p == out or p == root or root in p.parents or link or p in out.parents


def as_output_error(output: str | Path, exc: BaseException) -> OutputError | None:
    """``exc`` as an ``OutputError`` naming the output, when it says the output cannot be written; else None."""
    out = Path(output).absolute()
    if isinstance(exc, OutputError) or not isinstance(exc, Exception):
        return None
    if isinstance(exc, OSError):
        if exc.errno not in _WRITE_ERRNOS:
            return None
        if not (_owned_by(out, exc.filename) or _owned_by(out, exc.filename2)
                or (exc.filename is None and exc.errno in _NAMELESS_ERRNOS)):
            return None
        where = os.fsdecode(exc.filename) if exc.filename is not None else str(runs_dir(out))
        why = f"{exc.strerror or os.strerror(exc.errno)} [{errno.errorcode.get(exc.errno, exc.errno)}]"
    else:                    # a Spark write: Py4JJavaError / a captured JVM exception carrying the Java message
        text = str(exc)
        fault = next((f for f in _JAVA_WRITE_FAULTS if f in text), None)
        if fault is None or (fault not in _JAVA_NAMELESS and str(runs_dir(out)) not in text):
            return None
        line = next(ln for ln in text.splitlines() if fault in ln)
        where = str(runs_dir(out))
        why = re.sub(r"\s+", " ", line.strip())[:300]
    current = current_run(out)
    return OutputError(f"output.path {out} cannot be written ({where}: {why}); nothing was published, "
                       + (f"the published run {current.name} is intact" if current is not None else
                          "and there was no earlier output"))


@contextmanager
def output_errors(output: str | Path) -> Iterator[None]:
    """Report a write fault under ``output`` as ``OutputError`` (see ``as_output_error``); other errors pass."""
    try:
        yield
    except Exception as exc:
        mapped = as_output_error(output, exc)
        if mapped is None:
            raise
        raise mapped from exc


F = TypeVar("F", bound=Callable[..., Any])


def writes_output(path_of: Callable[[Any], str]) -> Callable[[F], F]:
    """Decorate a job's ``run(cfg)``: its write faults under ``path_of(cfg)`` are ``OutputError``s."""
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapped(cfg, *args, **kwargs):
            try:
                with output_errors(path_of(cfg)):
                    return fn(cfg, *args, **kwargs)
            finally:
                release_runs()      # the runs this job read may be pruned again
        return wrapped  # type: ignore[return-value]
    return decorate


_LOCKS: dict[Path, int] = {}     # output -> the lock file descriptor this process holds
_BEGUN: dict[Path, str] = {}     # output -> the id of the run this process began last (for the run log)
RUN_LOG = "runs.jsonl"


def begin_run(output: str | Path) -> tuple[str, Path]:
    """Lock the output for this run, remove dead runs' folders, create a fresh staging folder; refuse an output path
    this tool did not publish. A filesystem that refuses the lock or the folder is ``OutputError``."""
    out = Path(output).absolute()
    if out.exists() and not out.is_symlink():
        raise FileExistsError(f"output path {out} exists and is not a table published by this tool (a symlink into "
                              f"{runs_dir(out).name}/); move it away or choose another output.path")
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    with output_errors(out):
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


ERROR_CHARS = 500   # a run log record's error text: one line, at most this long


def _one_line(text: str, limit: int = ERROR_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def log_run(output: str | Path, record: dict) -> Path:
    """Append one JSON line per finished run (published or failed) to ``<path>.runs/runs.jsonl``: what a monitor
    reads. The record gets the id of the run this process began on that output, when it got that far.

    Each record is written whole or not at all, so a full disk never leaves a line a reader cannot parse or the next
    record glued onto one. Under an exclusive ``flock`` (two runs may log at once, e.g. one refused by the run lock):
    a tail left without its newline by a write that was cut (a crash, a full disk before this rule) is cut back to
    the last whole line (logged as a warning; a tail that is a whole record only gets its newline); then the line
    goes in with one ``write`` (``O_APPEND``) and is fsynced; a short or failed write is truncated back to where it
    began and raises ``OSError``. ``error`` is one line of at most ``ERROR_CHARS`` characters."""
    out = Path(output).absolute()
    root = runs_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    record = {"run_id": _BEGUN.pop(out, None), **record}
    if isinstance(record.get("error"), str):
        record["error"] = _one_line(record["error"])
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
    path = root / RUN_LOG
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        start = _repair_tail(fd, path)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, f"wrote {written} of {len(line)} bytes of a run log record", str(path))
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)      # not half a record: back to where this one began
            except OSError:
                pass
            raise
    finally:
        os.close(fd)                          # drops the flock
    return path


def _repair_tail(fd: int, path: Path) -> int:
    """Cut a run log's unterminated last line (a record whose write was cut) back to the last newline; -> size."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    keep, block = 0, 65536
    pos = size
    while pos > 0:                            # find the last newline, reading backwards
        lo = max(0, pos - block)
        chunk = os.pread(fd, pos - lo, lo)
        k = chunk.rfind(b"\n")
        if k >= 0:
            keep = lo + k + 1
            break
        pos = lo
    tail = os.pread(fd, size - keep, keep)
    try:
        whole = isinstance(json.loads(tail), dict)
    except ValueError:
        whole = False
    if whole:                                 # a whole record that only lost its newline: end its line
        os.write(fd, b"\n")
        return size + 1
    os.ftruncate(fd, keep)
    logger.warning("run log %s ended in %d bytes of a record cut mid-line (a write that did not finish); removed them",
                   path, size - keep)
    return keep


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


READERS = ".readers"
"""A run folder's reader-lock file: a job reading the run holds a shared flock on it; pruning takes it exclusively."""
_HELD: dict[Path, int] = {}      # run folder -> the descriptor of its reader lock this process holds


def hold_run(run_root: str | Path) -> None:
    """Keep ``run_root`` from being pruned while this process reads it (a shared lock on its ``.readers`` file, held
    until ``release_runs``: the job's end). A run being pruned right now is a ``TableError`` naming it."""
    from encoder.table import TableError

    root = Path(run_root).resolve()
    lock_file = root / READERS
    if root in _HELD or not lock_file.is_file():      # runs published before reader locks existed: nothing to hold
        return
    fd = os.open(lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TableError(f"{root} is being pruned by a newer run's publication; read the published path again") \
            from None
    _HELD[root] = fd


def release_runs() -> None:
    """Release every run this process holds (``hold_run``)."""
    while _HELD:
        os.close(_HELD.popitem()[1])


def _readers_active(run: Path) -> bool:
    """True when some process holds ``run`` for reading; otherwise returns holding nothing."""
    lock_file = run / READERS
    if not lock_file.is_file():
        return False
    fd = os.open(lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)        # a reader arriving now finds the folder gone or whole (rmtree follows at once)
    return False


def publish(output: str | Path, staging: Path, keep_runs: int = 2) -> Path:
    """Point ``output`` at ``staging`` atomically (symlink + rename), then prune old runs beyond ``keep_runs`` (a run a
    live reader holds is kept until a later publication finds it free)."""
    out = Path(output).absolute()
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.link"
    with output_errors(out):
        (staging / READERS).touch()
        try:
            os.symlink(os.path.relpath(staging, out.parent), tmp)
            os.replace(tmp, out)  # atomic on POSIX: readers see the old target or the new one
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
    release_runs()          # this job has read what it read: its own holds must not keep its base from pruning
    prune(out, keep_runs)
    unlock(out)
    return out


def current_run(output: str | Path) -> Path | None:
    out = Path(output).absolute()
    return out.resolve() if out.is_symlink() else None


def previous_run(output: str | Path, before: Path | None = None) -> Path | None:
    """The published run before the current one (or before the run folder ``before``, e.g. the one a reader pinned;
    kept by ``keep_runs`` >= 2), e.g. to compare two prediction runs."""
    current = before if before is not None else current_run(output)
    root = runs_dir(Path(output).absolute())
    if current is None or not root.is_dir():
        return None
    older = sorted(p for p in root.resolve().iterdir()
                   if p.is_dir() and (p / "manifest.json").exists() and p.name < current.name)
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
            if _readers_active(p):
                logger.info("kept old run %s: a job is still reading it", p)
                continue
            shutil.rmtree(p, ignore_errors=True)
            logger.info("pruned old run %s", p)
