"""Executor-side code: one encoder per Python worker process, reused across tasks and batches.

Kept in an importable module (not the job's ``__main__``) so the cache (``encoder.cache``) survives between tasks
under spark-submit too: a function pickled from ``__main__`` would carry a fresh copy of the cache with every task.
Each encoding task reports the process that ran it (``task_record``) through an accumulator; the embed job folds the
records into its manifest (``workers``).
"""
from __future__ import annotations

import os
import socket
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from encoder.cache import cached
from encoder.encode import FeatureExtractor
from encoder.schema import EMBEDDING, EMBEDDING_INT8, ID
from encoder.model import load_encoder
from encoder.encoder_config import EncoderConfig
from encoder.spec import FeatureSpec
from encoder.table import encode_batch


def task_gpus() -> list[str] | None:
    """The GPU addresses Spark assigned this task (its ``gpu`` resource), or None when it has none."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpus = ctx.resources().get("gpu") if ctx is not None else None
    return list(gpus.addresses) if gpus is not None else None


def task_device_and_threads(requested: str) -> tuple[str, int]:
    """The device and thread count this Spark task owns: its GPU resource if any, and spark.task.cpus threads."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    threads = int(ctx.cpus()) if ctx is not None else 1
    if requested == "cpu":
        return "cpu", threads
    gpus = task_gpus()
    if gpus:
        return f"cuda:{gpus[0]}", threads
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("encoder.device = 'cuda' but this executor has no CUDA device")
    return ("cuda" if torch.cuda.is_available() else "cpu"), threads


def worker_extractor(cfg: EncoderConfig, spec: FeatureSpec, device: str, threads: int) -> FeatureExtractor:
    """Load (once per process) the encoder this task should use and check it reproduces ``spec``."""
    def build() -> FeatureExtractor:
        extractor = FeatureExtractor(load_encoder(cfg.model, device=device, threads=threads), cfg)
        extractor.check_spec(spec)  # an executor with another model build must not write into this table
        return extractor

    return cached("worker_extractor", (cfg, spec.fingerprint, device, threads), build)


class TaskRecords:
    """Accumulator param (``sc.accumulator([], TaskRecords())``): a list of small dicts, one per task; Spark merges a
    task's list into the driver's when the task ends (a failed attempt's list is dropped)."""

    def zero(self, value: list) -> list:
        return []

    def addInPlace(self, a: list, b: list) -> list:  # noqa: N802 - Spark's name
        a.extend(b)
        return a


def task_record(device: str) -> dict:
    """What the driver records about the process that ran a task: host, pid, where it imported the project from (the
    shipped archive on a cluster), the encoder's device and the GPU Spark assigned the task (None: no GPU resource)."""
    import encoder

    return {"host": socket.gethostname(), "pid": os.getpid(), "device": device, "gpu": task_gpus(),
            "project_code": str(Path(encoder.__file__).parent.parent)}


def worker_summary(records: list[dict]) -> list[dict]:
    """Task records -> one entry per process (and device and GPU) with the number of tasks it ran, in a stable order:
    the manifest's ``workers``."""
    fields = ("host", "pid", "project_code", "device", "gpu")
    tasks = Counter(tuple(tuple(r[f]) if isinstance(r[f], list) else r[f] for f in fields) for r in records)
    return [{**dict(zip(fields, key)), "gpu": list(key[-1]) if key[-1] is not None else None, "tasks": n}
            for key, n in sorted(tasks.items(), key=lambda kv: [str(x) for x in kv[0]])]


def encode_partition(batches: Iterator[pa.RecordBatch], cfg: EncoderConfig, spec: FeatureSpec, id_column: str,
                     text_column: str, passthrough: Sequence[str], schema: pa.Schema, records=None
                     ) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: input batches -> embedding-table batches, same rows, same order. ``records``: a
    ``TaskRecords`` accumulator that gets this task's ``task_record``."""
    # the ONNX backends run on the CPU whatever GPU the task holds (EncoderConfig refuses device: cuda with them)
    device, threads = task_device_and_threads("cpu" if cfg.features.backend != "torch" else cfg.device)
    extractor = worker_extractor(cfg, spec, device, threads)
    if records is not None:
        records.add([task_record(device)])
    for batch in batches:
        if batch.num_rows:
            yield encode_batch(batch, extractor, spec, id_column, text_column, passthrough, schema)


def score_partition(batches: Iterator[pa.RecordBatch], heads_dir: str, spec: FeatureSpec, schema: pa.Schema
                    ) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for apply_heads: heads loaded once per worker (safetensors), every head per batch."""
    from heads.io import load_heads
    from heads.predict import predict_batch
    from heads.score import FusedScorer

    scorer = cached("heads_scorer", (heads_dir, spec.fingerprint),
                    lambda: FusedScorer(load_heads(heads_dir, spec), spec))
    for batch in batches:
        if batch.num_rows:
            yield predict_batch(batch, scorer, schema)


def local_top_k(batches: Iterator[pa.RecordBatch], queries: np.ndarray, k: int, spec: FeatureSpec,
                schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for the neighbours search: this partition's k nearest rows of every query (q, id, hamming,
    similarity by the library's one definition, and the rows' int8 bytes when ``schema`` asks for embedding_int8:
    rescoring's candidates); the job keeps the global top-k by (hamming, id)."""
    from encoder.quantize import codes_from_column, codes_to_column
    from search.index import CodeIndex
    from search.kernels import neighbours_table, top_k

    parts = [b for b in batches if b.num_rows]
    if not parts:
        return
    t = pa.Table.from_batches(parts)
    int8 = (codes_from_column(t.column(EMBEDDING_INT8), spec.rescore_bytes) if EMBEDDING_INT8 in schema.names
            else None)
    index = CodeIndex(t.column(ID).combine_chunks(), codes_from_column(t.column(EMBEDDING), spec.n_bytes), spec,
                      int8=int8)
    rows, dist = top_k(queries, index.codes, k)
    found = neighbours_table(np.arange(len(queries)), rows, dist, index.ids, spec.dim)
    cols = [found.column("query").combine_chunks().cast(pa.int32()), found.column(ID).combine_chunks(),
            found.column("hamming").combine_chunks(), found.column("similarity").combine_chunks()]
    if index.int8 is not None:
        cols.append(codes_to_column(index.int8[rows.ravel()]))
    yield pa.RecordBatch.from_arrays(cols, schema=schema)


def candidate_cosines(batches: Iterator[pa.RecordBatch], vectors: np.ndarray, spec: FeatureSpec, schema: pa.Schema
                      ) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for rescoring: candidate rows (q, id, hamming, similarity, embedding_int8) -> the same rows
    with ``cosine`` (float32, the output column) and ``_cos`` (float64, what the job ranks by): the cosine of query
    q's float vector with the row's int8 vector, by the library's one cosine (``search.kernels.cosine_rows``)."""
    from encoder.quantize import codes_from_column
    from search.kernels import cosine_rows

    for batch in batches:
        if not batch.num_rows:
            continue
        q = batch.column("q").to_numpy(zero_copy_only=False)
        cos = cosine_rows(vectors[q], spec.decode_rescore(codes_from_column(batch.column(EMBEDDING_INT8),
                                                                             spec.rescore_bytes)))
        yield pa.RecordBatch.from_arrays([batch.column(i) for i in range(4)] +
                                         [pa.array(cos.astype(np.float32)), pa.array(cos)], schema=schema)


def block_rows(batches: Iterator[pa.RecordBatch], blocks: list[tuple[int, int]], spec: FeatureSpec,
               schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for near-duplicates: (id, embedding) -> one row per (row, pigeonhole block) with the block's
    value as bytes, so rows that share a block value meet in one join group."""
    from encoder.quantize import codes_from_column, codes_to_column
    from search.duplicates import block_keys

    for batch in batches:
        if not batch.num_rows:
            continue
        codes = codes_from_column(batch.column(EMBEDDING), spec.n_bytes)
        for j, keys in enumerate(block_keys(codes, blocks)):
            values = keys.view(np.uint8).reshape(len(keys), keys.dtype.itemsize)   # fixed-width void -> bytes
            yield pa.RecordBatch.from_arrays([batch.column(ID), batch.column(EMBEDDING),
                                              pa.array(np.full(len(keys), j, np.int32)), codes_to_column(values)],
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
