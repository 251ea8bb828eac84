"""Test-only fault injection for Spark's Python workers; the product carries no hook for it.

A fault test puts this folder first on the Python workers' path (``PYTHONPATH``: the driver's environment under a
local master, ``spark.executorEnv.PYTHONPATH`` on a cluster) and sets

    TEXT_EMBED_TEST_FAULT          kill_worker | kill_executor
    TEXT_EMBED_TEST_FAULT_RECORD   a file that must not exist yet

Python imports ``sitecustomize`` at start-up, so every worker process (and the daemon they fork from) installs an
import hook that wraps ``jobs.worker.encode_partition`` once that module is imported (from wherever the worker
imports the project: the shipped wheel on a cluster). After the first batch of partition 0's first attempt, the
wrapper creates the record file (O_EXCL: the fault fires once per run, even when a lost executor makes Spark re-run
the stage as a new stage attempt whose tasks count attempts from 0 again), writes what it is about to kill into it as
JSON, and SIGKILLs this Python worker or the executor JVM above it. The test reads the record to know the kill
happened. Without TEXT_EMBED_TEST_FAULT nothing is installed.
"""
from __future__ import annotations

import functools
import importlib.abc
import json
import os
import signal
import sys
from pathlib import Path

FAULT_ENV = "TEXT_EMBED_TEST_FAULT"
RECORD_ENV = "TEXT_EMBED_TEST_FAULT_RECORD"
TARGET = "jobs.worker"
FAULTS = ("kill_worker", "kill_executor")


def _ancestor(marker: str) -> int | None:
    """The nearest ancestor process whose command line contains ``marker``."""
    pid = os.getppid()
    while pid > 1:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker in cmd:
                return pid
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


def _fire(fault: str, record: str) -> None:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None or ctx.partitionId() != 0 or ctx.attemptNumber() != 0:
        return
    try:
        fd = os.open(record, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:        # fired already in this run
        return
    pid = os.getpid()
    if fault == "kill_executor":
        pid = _ancestor("CoarseGrainedExecutorBackend") or _ancestor("org.apache.spark") or pid
    os.write(fd, json.dumps({"fault": fault, "killed_pid": pid, "worker_pid": os.getpid(),
                             "partition": ctx.partitionId(), "attempt": ctx.attemptNumber(),
                             "stage": ctx.stageId()}).encode())
    os.close(fd)
    os.kill(pid, signal.SIGKILL)


def _wrap(module, fault: str, record: str) -> None:
    original = module.encode_partition

    @functools.wraps(original)
    def encode_partition(*args, **kwargs):
        for k, out in enumerate(original(*args, **kwargs)):
            yield out
            if k == 0:            # one batch encoded and handed to Spark: the task is under way
                _fire(fault, record)

    module.encode_partition = encode_partition


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Finds ``jobs.worker`` through the other finders and wraps its loader so the module is patched once run."""

    def __init__(self, fault: str, record: str):
        self.fault, self.record = fault, record

    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, self)
                return spec
        return None


class _Loader(importlib.abc.Loader):
    def __init__(self, inner, hook: _WrapOnImport):
        self.inner, self.hook = inner, hook

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        _wrap(module, self.hook.fault, self.hook.record)


def _install() -> None:
    fault, record = os.environ.get(FAULT_ENV), os.environ.get(RECORD_ENV)
    if not fault:
        return
    if fault not in FAULTS or not record:
        raise RuntimeError(f"{FAULT_ENV}={fault!r} needs to be one of {FAULTS} and {RECORD_ENV} a file path")
    sys.meta_path.insert(0, _WrapOnImport(fault, record))


_install()
