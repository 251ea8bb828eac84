"""Head speed: ratios against baselines measured in the same run.

    python bench/heads.py [--rows 1000000] [--heads 100] [--goemotions-rows 10000]

(1) Applying 100 heads to 1M rows of stored codes (read from Parquet first), fused (decode once, one matrix product)
    vs a loop that decodes and applies one head at a time (timed on a slice, rows/s compared). Bars: >= 1M rows/s on
    2 cores and >= 10x the loop. Also the full prediction path (probabilities and Arrow columns) on the same rows.
(2) Training all 28 GoEmotions heads (one binary head per emotion) in one pass vs 28 separate trainings, on real
    GoEmotions texts encoded by the default encoder and stored as a Parquet table of codes.
Timing: bench/timing.py; (1)'s three paths take turns within each repeat after a warm-up, medians.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import require_data  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from encoder.quantize import codes_from_column  # noqa: E402
from encoder.spec import FeatureSpec  # noqa: E402
from heads.modules import Head  # noqa: E402
from heads.predict import predict_batch, predictions_schema  # noqa: E402
from heads.score import FusedScorer, score_one_by_one  # noqa: E402
from heads.tasks import TaskConfig  # noqa: E402
from heads.fitted import FittedHead  # noqa: E402
from heads.train import TrainConfig, train_heads  # noqa: E402
from timing import compare, once  # noqa: E402


def make_heads(n: int, dim: int, mix: str, seed: int = 0) -> list[FittedHead]:
    """binary: n binary linear heads; mixed: 70% binary + 30% 4-class linear; mlp: as mixed but every tenth head a
    32-unit MLP (random weights: this measures speed only)."""
    torch.manual_seed(seed)
    out = []
    mlp = mix == "mlp"
    for i in range(n):
        if i % 10 < 7 or mix == "binary":
            task, k, hidden = TaskConfig(f"b{i}", "binary", (f"c{i}",)), 1, 0
        elif i % 10 < 9 or not mlp:
            task, k, hidden = TaskConfig(f"m{i}", "multiclass", (f"c{i}",)), 4, 0
        else:
            task, k, hidden = TaskConfig(f"p{i}", "binary", (f"c{i}",), head="mlp", hidden=32), 1, 32
        labels = [str(j) for j in range(max(k, 2))]
        out.append(FittedHead(task, Head(dim, k, hidden).eval(), labels))
    return out


def apply_bench(args, spec: FeatureSpec) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "codes.parquet"
        codes = rng.integers(0, 256, size=(args.rows, spec.n_bytes), dtype=np.uint8)
        ids = pa.array(np.arange(args.rows).astype(str))
        flat = pa.py_buffer(codes.tobytes())
        offsets = pa.py_buffer((np.arange(args.rows + 1, dtype=np.int32) * spec.n_bytes).tobytes())
        emb = pa.Array.from_buffers(pa.binary(), args.rows, [None, offsets, flat])
        pq.write_table(pa.table({"id": ids, "embedding": emb}), path, compression="zstd")
        del codes, emb

        def read():
            table = pq.read_table(path)
            return table, codes_from_column(table.column("embedding"), spec.n_bytes)
        read_s, (table, stored) = once(read)
    for mix in ("binary", "mixed", "mlp"):
        score_bench(args, spec, stored, table, make_heads(args.heads, spec.dim, mix), read_s if mix == "binary" else None)


def score_bench(args, spec, stored, table, heads, read_s) -> None:
    scorer = FusedScorer(heads, spec)
    loop_rows = min(args.rows, 50_000)
    full_rows = min(args.rows, 200_000)
    # Full prediction path: probabilities + Arrow columns, in 8,192-row record batches.
    schema = predictions_schema(heads)
    batches = table.slice(0, full_rows).to_batches(max_chunksize=8192)
    t = compare({"fused": lambda: scorer.logits(stored),
                 "one by one": lambda: score_one_by_one(heads, spec, stored[:loop_rows]),
                 "full path": lambda: [predict_batch(b, scorer, schema) for b in batches]}, args.repeats,
                warmup={"fused": lambda: scorer.logits(stored[:50_000]),
                        "one by one": lambda: score_one_by_one(heads, spec, stored[:1000]),
                        "full path": lambda: predict_batch(batches[0], scorer, schema)})
    fused_s, fused_rate = t.median("fused"), t.rate("fused", args.rows)
    loop_rate = t.rate("one by one", loop_rows)
    full_rate = t.rate("full path", full_rows)
    outs = sum(h.module.n_outputs for h in heads)
    n_mlp = sum(1 for h in heads if h.module.hidden)
    n_multi = sum(1 for h in heads if h.task.kind == "multiclass")
    kind = f"{args.heads - n_mlp - n_multi} binary + {n_multi} 4-class linear" + (f" + {n_mlp} MLP(32)" if n_mlp else "")
    print(f"(1) {kind} heads ({outs} outputs) on {args.rows:,} stored rows, {torch.get_num_threads()} threads, "
          f"cpu: fused {fused_rate:,.0f} rows/s ({fused_s:.2f} s) vs one head at a time {loop_rate:,.0f} rows/s: "
          f"ratio {t.speedup('fused', 'one by one', args.rows, loop_rows):.1f}x (bars: >= 1,000,000 rows/s and >= 10x)")
    if read_s is not None:
        print(f"    reading the codes from Parquet: {args.rows / read_s:,.0f} rows/s")
    print(f"    full prediction path (probabilities, labels, Arrow columns, 8,192-row batches): {full_rate:,.0f} "
          f"rows/s = {full_rate / fused_rate:.2f}x of scoring alone (bar for 100 binary heads: >= 1,000,000 rows/s)")
    worst = max(float(np.abs(a - b).max()) for a, b in
                zip(scorer.logits(stored[:2000]), score_one_by_one(heads, spec, stored[:2000])))
    print(f"    fused vs one-by-one: max |logit difference| {worst:.1e}")


def train_bench(args) -> None:
    from encoder.model import load_encoder
    from encoder.build_spec import build_spec
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
    from heads.data import SplitRule, arrow_source

    src = require_data() / "goemotions"
    cols = pq.read_schema(src / "train.parquet").names[2:]
    n_train = args.goemotions_rows
    tr = pq.read_table(src / "train.parquet").slice(0, n_train)
    va = pq.read_table(src / "validation.parquet").slice(0, max(n_train // 8, 500))
    cfg = EncoderConfig()
    fx = FeatureExtractor(load_encoder(cfg.model, threads=os.cpu_count() or 1), cfg)
    spec = build_spec(cfg, fx)

    def encode_parts() -> list:
        parts = []
        for tbl, split in ((tr, "train"), (va, "validation")):
            codes = fx.encode(tbl.column("text").to_pylist(), spec).codes
            parts.append(pa.table({"id": tbl.column("id"), "embedding": pa.array([c.tobytes() for c in codes],
                                                                                 pa.binary()),
                                   **{c: tbl.column(c).cast(pa.int64()) for c in cols},
                                   "split": pa.array([split] * tbl.num_rows)}))
        return parts
    enc_s, parts = once(encode_parts)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.parquet"
        pq.write_table(pa.concat_tables(parts), path, row_group_size=8192)
        tasks = [TaskConfig(c, "binary", (c,)) for c in cols]
        tc = TrainConfig(epochs=10, patience=3)
        source = arrow_source(path, spec, cols, SplitRule("split"))
        # one training each (minutes), no warm-up: both read the same cached Parquet file
        t = compare({"one pass": lambda: train_heads(source, tasks, spec.dim, tc),
                     "separate": lambda: [train_heads(arrow_source(path, spec, [task.columns[0]], SplitRule("split")),
                                                      [task], spec.dim, tc)[0] for task in tasks]},
                    repeats=1, warmup=0)
        together, separate = t.results["one pass"], t.results["separate"]
        one_pass, sep_s = t.median("one pass"), t.median("separate")
    same = sum(torch.equal(a.module.out.weight, b.module.out.weight) for a, b in zip(together, separate))
    print(f"(2) 28 GoEmotions heads on {tr.num_rows:,} train + {va.num_rows:,} validation rows (encoded in "
          f"{enc_s:.0f} s): one pass {one_pass:.1f} s vs 28 separate trainings {sep_s:.1f} s: ratio "
          f"{sep_s / one_pass:.1f}x faster; {same} of 28 heads bit-identical to their separate training")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--heads", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--goemotions-rows", type=int, default=10_000)
    ap.add_argument("--skip-training", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    spec = FeatureSpec.of(model={"name": "all-MiniLM-L6-v2", "sha256": "0" * 64}, layers=(6,), layer_combine="concat",
                       pooling="mean", normalize=True, max_length=256, quantization="binary",
                       threshold_mode="zero", dim=384)
    apply_bench(args, spec)
    if not args.skip_training:
        train_bench(args)


if __name__ == "__main__":
    main()
