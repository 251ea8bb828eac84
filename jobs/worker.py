"""Executor-side code: one encoder per Python worker process, reused across tasks and batches.

Kept in an importable module (not the job's ``__main__``) so the cache survives between tasks under spark-submit
too: a function pickled from ``__main__`` would carry a fresh copy of the cache with every task.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from encoder.encode import FeatureExtractor
from encoder.schema import EMBEDDING, ID
from encoder.model import load_encoder
from encoder.encoder_config import EncoderConfig
from encoder.spec import FeatureSpec
from encoder.table import encode_batch

logger = logging.getLogger(__name__)
_CACHE: dict[tuple, FeatureExtractor] = {}


def task_device_and_threads(requested: str) -> tuple[str, int]:
    """The device and thread count this Spark task owns: its GPU resource if any, and spark.task.cpus threads."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    threads = int(ctx.cpus()) if ctx is not None else 1
    gpus = ctx.resources().get("gpu") if ctx is not None else None
    if gpus is not None:        # what Spark assigned this task, in the executor log (the GPU wiring's test reads it)
        print(f"task {ctx.partitionId()}: assigned gpu {list(gpus.addresses)}; encoder.device = {requested}",  # type: ignore[union-attr]
              file=sys.stderr)
    if requested == "cpu":
        return "cpu", threads
    if gpus is not None and gpus.addresses:
        return f"cuda:{gpus.addresses[0]}", threads
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("encoder.device = 'cuda' but this executor has no CUDA device")
    return ("cuda" if torch.cuda.is_available() else "cpu"), threads


def worker_extractor(cfg: EncoderConfig, spec: FeatureSpec) -> FeatureExtractor:
    """Load (once per process) the encoder this task should use and check it reproduces ``spec``."""
    device, threads = task_device_and_threads(cfg.device)
    key = (cfg, spec.fingerprint, device, threads)
    if key not in _CACHE:
        _CACHE.clear()  # one model per worker process; free the old one first
        extractor = FeatureExtractor(load_encoder(cfg.model, device=device, threads=threads), cfg)
        extractor.check_spec(spec)  # an executor with another model build must not write into this table
        import encoder

        print(f"worker {os.getpid()}: project code from {Path(encoder.__file__).parent.parent}", file=sys.stderr)
        _CACHE[key] = extractor
    return _CACHE[key]


def encode_partition(batches: Iterator[pa.RecordBatch], cfg: EncoderConfig, spec: FeatureSpec, id_column: str,
                     text_column: str, passthrough: Sequence[str], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: input batches -> embedding-table batches, same rows, same order."""
    extractor = worker_extractor(cfg, spec)
    for k, batch in enumerate(batches):
        if batch.num_rows:
            yield encode_batch(batch, extractor, spec, id_column, text_column, passthrough, schema)
            if k == 0:
                _injected_fault()


FAULT_ENV = "TEXT_EMBED_INJECT_FAULT"   # tests only: kill_worker | kill_executor, on a task's first attempt
FAULT_ONCE_ENV = "TEXT_EMBED_INJECT_FAULT_ONCE"   # tests only: a file path; the fault fires only if it can create it


def _injected_fault() -> None:
    """A real SIGKILL at a known point, for the fault tests: of this Python worker, or of the executor JVM above it
    (first attempt of partition 0 only, so the retry succeeds). Unset in production."""
    fault = os.environ.get(FAULT_ENV)
    if not fault:
        return
    from pyspark import TaskContext

    ctx = TaskContext.get()
    # a lost executor takes its shuffle files along, so Spark re-runs the stage as a new stage attempt whose tasks
    # start again at attempt 0 (Python's TaskContext does not say which stage attempt): with the once-file the
    # fault fires once per run, not again in every re-run until the stage is aborted
    if ctx is None or ctx.attemptNumber() != 0 or ctx.partitionId() != 0:
        return
    once = os.environ.get(FAULT_ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    pid = os.getpid()
    if fault == "kill_executor":
        pid = _ancestor("CoarseGrainedExecutorBackend") or _ancestor("org.apache.spark") or pid
    logger.warning("injected fault %s: SIGKILL to pid %d", fault, pid)
    os.kill(pid, signal.SIGKILL)


def _ancestor(marker: str) -> int | None:
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


_SCORERS: dict[tuple, "object"] = {}


def score_partition(batches: Iterator[pa.RecordBatch], heads_dir: str, spec: FeatureSpec, schema: pa.Schema
                    ) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for apply_heads: heads loaded once per worker (safetensors), every head per batch."""
    from heads.io import load_heads
    from heads.predict import predict_batch
    from heads.score import FusedScorer

    key = (heads_dir, spec.fingerprint)
    if key not in _SCORERS:
        _SCORERS.clear()
        _SCORERS[key] = FusedScorer(load_heads(heads_dir, spec), spec)
    scorer = _SCORERS[key]
    for batch in batches:
        if batch.num_rows:
            yield predict_batch(batch, scorer, schema)


def local_top_k(batches: Iterator[pa.RecordBatch], queries: np.ndarray, k: int, spec: FeatureSpec,
                schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for the neighbours search: this partition's k nearest rows of every query (q, id, hamming);
    the job keeps the global top-k by (hamming, id)."""
    from encoder.quantize import codes_from_column
    from search.index import CodeIndex

    parts = [b for b in batches if b.num_rows]
    if not parts:
        return
    t = pa.Table.from_batches(parts)
    index = CodeIndex(t.column(ID).combine_chunks(), codes_from_column(t.column(EMBEDDING), spec.n_bytes), spec)
    found = index.search(queries, k)
    yield pa.RecordBatch.from_arrays([found.column("query").combine_chunks().cast(pa.int32()),
                                      found.column(ID).combine_chunks(), found.column("hamming").combine_chunks()],
                                     schema=schema)


def block_rows(batches: Iterator[pa.RecordBatch], blocks: list[tuple[int, int]], spec: FeatureSpec,
               schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for near-duplicates: (id, embedding) -> one row per (row, pigeonhole block) with the block's
    value as bytes, so rows that share a block value meet in one join group."""
    from encoder.quantize import codes_from_column
    from search.duplicates import block_keys

    for batch in batches:
        if not batch.num_rows:
            continue
        codes = codes_from_column(batch.column(EMBEDDING), spec.n_bytes)
        for j, keys in enumerate(block_keys(codes, blocks)):
            width = keys.dtype.itemsize
            flat = pa.py_buffer(keys.tobytes())
            offsets = pa.py_buffer((np.arange(len(keys) + 1, dtype=np.int32) * width).tobytes())
            yield pa.RecordBatch.from_arrays([batch.column(ID), batch.column(EMBEDDING),
                                              pa.array(np.full(len(keys), j, np.int32)),
                                              pa.Array.from_buffers(pa.binary(), len(keys), [None, offsets, flat])],
                                             schema=schema)


def verify_pairs(batches: Iterator[pa.RecordBatch], radius: int, blocks: list[tuple[int, int]], spec: FeatureSpec,
                 schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for near-duplicates: candidate pairs (id_a, id_b, block, code_a, code_b) -> the pairs within
    ``radius`` bits, each kept only under the first block its two codes share (so each pair comes out once)."""
    from encoder.quantize import codes_from_column
    from search.duplicates import first_shared_block
    from search.kernels import pair_hamming, similarity

    for batch in batches:
        if not batch.num_rows:
            continue
        a = codes_from_column(batch.column("code_a"), spec.n_bytes)
        b = codes_from_column(batch.column("code_b"), spec.n_bytes)
        d = pair_hamming(a, b)
        block = batch.column("block").to_numpy(zero_copy_only=False)
        keep = (d <= radius) & (first_shared_block(a, b, blocks) == block)
        if keep.any():
            mask = pa.array(keep)
            yield pa.RecordBatch.from_arrays([batch.column(0).filter(mask), batch.column(1).filter(mask),
                                              pa.array(d[keep]), pa.array(similarity(d[keep], spec.dim))],
                                             schema=schema)
