"""Search over binary codes: retrieval quality against fp32 cosine, speed against FAISS, near-duplicates against brute
force, in one run.

    python bench/search.py [--texts 20000 --queries 500 --corpus 1000000]   # ~15 minutes on 2 cores; ../shared/data

(1) Quality. 20,000 real texts (12,400 GoEmotions train comments, the first by the id hash of bench/study.py, + the
    7,600 AG News test articles), encoded once with the default spec (all-MiniLM-L6-v2, last 4 layers averaged, mean
    pooling, normalised): recall@10 of the binary top-10 against the fp32 cosine top-10 for 500 of them as queries
    (self excluded), and of binary candidates rescored by int8 / fp32 vectors; Spearman of each similarity against
    SICK relatedness (senteval/sick_e test, 4,906 pairs). Bytes per text beside each.
(2) Speed. Exact top-10 over 1,000,000 codes (the 20,000 real codes, each repeated 50 times with 8% of its bits
    flipped at random, so distances look like real ones), 256 real queries: the library (search/kernels.py) vs FAISS
    IndexBinaryFlat, both on 2 threads, same codes, taking turns (bench/timing.py: warm-up, medians of the repeats);
    then the Spark search (jobs/neighbours.py, local[2]) vs the library on the same 1,000,000 codes.
(3) Near-duplicates on 50,000 codes (20,000 real + 30,000 copies with 0..12 bits flipped): pigeonhole blocks vs all
    pairs, pairs found and time.
Writes out/search/report.md and search.png. Encoded features are cached in out/search/ (keyed by the texts).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT, require_data  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from encoder.build_spec import build_spec  # noqa: E402
from encoder.encode import FeatureExtractor  # noqa: E402
from encoder.encoder_config import EncoderConfig  # noqa: E402
from encoder.model import load_encoder  # noqa: E402
from encoder.quantize import calibrate_scales, dequantize, quantize  # noqa: E402
from search.duplicates import near_duplicates  # noqa: E402
from search.kernels import pair_hamming, rescore, top_k  # noqa: E402
from study import hash_order  # noqa: E402
from tests.oracles import brute_force_pairs  # noqa: E402
from timing import compare  # noqa: E402

OUT = ROOT / "out" / "search"
THREADS = 2


def corpus_texts(n: int) -> list[str]:
    d = require_data()
    ag = pq.read_table(d / "ag_news" / "test.parquet", columns=["id", "text"]).to_pydict()
    go = pq.read_table(d / "goemotions" / "train.parquet", columns=["id", "text"]).to_pydict()
    n_go = max(n - len(ag["text"]), 0)
    order = hash_order(go["id"])[:n_go]
    return ([go["text"][i] for i in order] + ag["text"])[:n]


def features(fx: FeatureExtractor, texts: list[str], name: str) -> np.ndarray:
    """fp32 features (normalised), cached in out/search/ by a hash of the texts."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = OUT / f"{name}-{key}.npy"
    if path.exists():
        return np.load(path)
    t = time.perf_counter()
    x = fx.features(texts).values.astype(np.float32)
    print(f"  encoded {len(texts):,} texts in {time.perf_counter() - t:.0f} s")
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def drop_self(rows: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.stack([[r for r in row if r != qi][:k] for row, qi in zip(rows, q)])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def quality(fx, spec, args, table: list) -> dict:
    texts = corpus_texts(args.texts)
    x = features(fx, texts, "corpus")
    codes = spec.encode_features(x)
    scales = calibrate_scales(x[:2000])
    x8 = dequantize(quantize(x, "int8", scales=scales), x.shape[1], "int8", scales)
    rng = np.random.default_rng(0)
    q = np.sort(rng.choice(len(x), args.queries, replace=False))
    k = 10
    cos = x[q] @ x.T
    cos[np.arange(len(q)), q] = -np.inf
    truth = np.argsort(-cos, axis=1, kind="stable")[:, :k]
    rows, _ = top_k(codes[q], codes, k + 1)
    binary = drop_self(rows, q, k)
    rows8 = np.argsort(-(x[q] @ x8.T) + np.where(np.arange(len(x))[None, :] == q[:, None], np.inf, 0), axis=1,
                       kind="stable")[:, :k]
    cand, _ = top_k(codes[q], codes, args.candidates + 1)
    cand = drop_self(cand, q, args.candidates)
    re8, _ = rescore(x[q], cand, x8, k)
    re32, _ = rescore(x[q], cand, x, k)
    res = {"binary": recall(binary, truth), "int8": recall(rows8, truth), "binary+int8": recall(re8, truth),
           "binary+fp32": recall(re32, truth)}
    # SICK relatedness
    sick = pq.read_table(require_data() / "senteval" / "sick_e" / "test.parquet",
                         columns=["text", "text_pair", "relatedness_score"]).to_pydict()
    a = features(fx, sick["text"], "sick_a")
    b = features(fx, sick["text_pair"], "sick_b")
    gold = np.asarray(sick["relatedness_score"], np.float64)
    ca, cb = spec.encode_features(a), spec.encode_features(b)
    a8 = dequantize(quantize(a, "int8", scales=scales), a.shape[1], "int8", scales)
    b8 = dequantize(quantize(b, "int8", scales=scales), b.shape[1], "int8", scales)
    cosine = lambda u, v: np.sum(u * v, 1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)  # noqa: E731
    sp = {"fp32": spearman(cosine(a, b), gold), "binary": spearman(-pair_hamming(ca, cb), gold),
          "int8": spearman(cosine(a8, b8), gold)}
    sp["binary+int8"], sp["binary+fp32"] = sp["int8"], sp["fp32"]   # rescoring scores a pair by its fuller vector
    nb = spec.n_bytes
    rows_out = [("fp32 cosine (exhaustive)", 4 * x.shape[1], 1.0, sp["fp32"]),
                ("binary Hamming (exhaustive)", nb, res["binary"], sp["binary"]),
                ("int8 cosine (exhaustive)", x.shape[1], res["int8"], sp["int8"]),
                (f"binary top-{args.candidates}, rescored by int8", nb + x.shape[1], res["binary+int8"],
                 sp["binary+int8"]),
                (f"binary top-{args.candidates}, rescored by fp32", nb + 4 * x.shape[1], res["binary+fp32"],
                 sp["binary+fp32"])]
    print(f"\n(1) Quality: {len(texts):,} texts, {len(q)} queries, recall@10 against the fp32 cosine top-10; "
          f"Spearman vs SICK relatedness ({len(gold):,} test pairs)")
    print(f"{'method':44s} {'bytes/text':>10s} {'recall@10':>10s} {'Spearman':>9s}")
    for name, by, r, s in rows_out:
        print(f"{name:44s} {by:10d} {r:10.3f} {s:9.3f}")
        table.append((name, by, r, s))
    return {"codes": codes, "x": x, "texts": texts}


def speed(spec, codes: np.ndarray, args) -> dict:
    import faiss

    rng = np.random.default_rng(1)
    reps = -(-args.corpus // len(codes))
    bits = np.unpackbits(np.tile(codes, (reps, 1))[:args.corpus], axis=1)
    flip = rng.random(bits.shape) < 0.08
    flip[:len(codes)] = False                         # the real codes themselves stay
    big = np.packbits(bits ^ flip, axis=1)
    del bits, flip
    queries = codes[rng.choice(len(codes), 256, replace=False)]
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    index = faiss.IndexBinaryFlat(spec.dim)
    index.add(big)
    t = compare({"library": lambda: top_k(queries, big, 10), "faiss": lambda: index.search(queries, 10)},
                args.repeats, warmup={"library": lambda: top_k(queries[:8], big, 10),
                                      "faiss": lambda: index.search(queries[:8], 10)})
    rows, dist = t.results["library"]
    fd, _ = t.results["faiss"]
    assert np.array_equal(np.sort(fd, 1), dist), "FAISS and the library disagree on the top-10 distances"
    lib_qps, faiss_qps = t.rate("library", len(queries)), t.rate("faiss", len(queries))
    print(f"\n(2) Speed: exact top-10 over {len(big):,} codes of {spec.n_bytes} bytes, {len(queries)} queries, "
          f"{THREADS} threads, median of {args.repeats} interleaved")
    print(f"library {lib_qps:,.0f} queries/s, FAISS IndexBinaryFlat {faiss_qps:,.0f} queries/s: ratio "
          f"{t.speedup('library', 'faiss'):.2f}x (bar >= 0.5x, aim >= 1x); same distances")
    spark_qps = spark_search(spec, big, queries, rows, dist, args)
    print(f"Spark search (local[2], {args.spark_partitions} partitions, warm) {spark_qps:,.1f} queries/s vs the library "
          f"in-process {lib_qps:,.0f}: ratio {spark_qps / lib_qps:.2f}x")
    return {"library": lib_qps, "faiss": faiss_qps, "spark": spark_qps, "n": len(big)}


def spark_search(spec, big: np.ndarray, queries: np.ndarray, rows: np.ndarray, dist: np.ndarray, args) -> float:
    """The job's search step (jobs/neighbours.search) over a Parquet copy of the codes, timed warm."""
    from jobs import neighbours
    from jobs.common import SparkSettings, spark_session

    ids = [f"r{i:07d}" for i in range(len(big))]
    flat = pa.py_buffer(big.tobytes())
    offsets = pa.py_buffer((np.arange(len(big) + 1, dtype=np.int32) * spec.n_bytes).tobytes())
    emb = pa.Array.from_buffers(pa.binary(), len(big), [None, offsets, flat])
    spark = spark_session(SparkSettings(arrow_batch_rows=8192), "bench_search")
    with tempfile.TemporaryDirectory() as tmp:
        per = -(-len(big) // args.spark_partitions)
        for p in range(args.spark_partitions):
            pq.write_table(pa.table({"id": ids[p * per:(p + 1) * per], "embedding": emb.slice(p * per, per)}),
                           Path(tmp) / f"part-{p:05d}.parquet")
        df = spark.read.parquet(tmp)

        class _T:   # the two facts search() reads from a published table
            pass
        table = _T()
        table.spec = spec  # type: ignore[attr-defined]
        qids = [f"q{i:03d}" for i in range(len(queries))]
        t = compare({"spark": lambda: neighbours.search(df, qids, queries, 10, table, pa.string()).collect()},
                    args.repeats)
        out = t.results["spark"]
    got = sorted((r["query_id"], r["rank"], r["hamming"]) for r in out)
    want = sorted((qids[q], k + 1, int(dist[q, k])) for q in range(len(queries)) for k in range(10))
    assert got == want, "the Spark search disagrees with the library"
    return t.rate("spark", len(queries))


def duplicates(codes: np.ndarray, args) -> list:
    rng = np.random.default_rng(2)
    n_extra = args.dup_codes - len(codes)
    src = rng.integers(0, len(codes), n_extra)
    bits = np.unpackbits(codes[src], axis=1)
    for row, f in zip(bits, rng.integers(0, 13, n_extra)):
        row[rng.choice(bits.shape[1], f, replace=False)] ^= 1
    data = np.concatenate([codes, np.packbits(bits, axis=1)])
    out = []
    print(f"\n(3) Near-duplicates over {len(data):,} codes (pigeonhole blocks vs all pairs)")
    for radius in args.radii:
        t = compare({"blocks": lambda: near_duplicates(data, radius),
                     "all pairs": lambda: brute_force_pairs(data, radius)}, repeats=1, warmup=0)   # one run each
        (pairs, d), (bp, bd) = t.results["blocks"], t.results["all pairs"]
        tp, tb = t.median("blocks"), t.median("all pairs")
        same = np.array_equal(pairs, bp) and np.array_equal(d, bd)
        rec = len({tuple(p) for p in pairs} & {tuple(p) for p in bp}) / max(len(bp), 1)
        print(f"radius {radius:2d}: {len(pairs):,} pairs (brute force {len(bp):,}), recall {rec:.3f}, identical "
              f"{same}; {tp:.2f} s vs {tb:.1f} s: {tb / tp:.0f}x faster")
        out.append((radius, len(pairs), len(bp), rec, tp, tb))
    return out


def report(quality_rows, sp, dup, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["# Search over binary codes", "", f"`python bench/search.py --texts {args.texts} --queries "
             f"{args.queries} --corpus {args.corpus}` ({THREADS} CPU threads).", "",
             "## Quality", "", "| method | bytes/text | recall@10 vs fp32 top-10 | Spearman vs SICK relatedness |",
             "|---|---|---|---|"]
    lines += [f"| {n} | {b} | {r:.3f} | {s:.3f} |" for n, b, r, s in quality_rows]
    lines += ["", "## Speed", "", f"Exact top-10 over {sp['n']:,} codes, 256 queries: library {sp['library']:,.0f} "
              f"queries/s, FAISS IndexBinaryFlat {sp['faiss']:,.0f} ({sp['library'] / sp['faiss']:.2f}x), Spark "
              f"search {sp['spark']:,.1f} ({sp['spark'] / sp['library']:.2f}x of the library).", "",
              "## Near-duplicates", "", "| radius | pairs | brute-force pairs | recall | pigeonhole s | brute force s |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r} | {p:,} | {b:,} | {rc:.3f} | {tp:.2f} | {tb:.1f} |" for r, p, b, rc, tp, tb in dup]
    lines += ["", "![search](search.png)"]
    (OUT / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = [n.replace(" (exhaustive)", "").replace(", rescored by", "\n+") for n, *_ in quality_rows]
    a.barh(names[::-1], [r for _, _, r, _ in quality_rows][::-1], color="#4c72b0")
    for i, (_, by, r, _) in enumerate(quality_rows[::-1]):
        a.text(r, i, f" {r:.2f} ({by} B/text)", va="center", fontsize=8)
    a.set_xlim(0, 1.35)
    a.set_xlabel("recall@10 against the fp32 cosine top-10")
    a.set_title(f"Retrieval quality ({args.texts:,} real texts)")
    b.bar(["library", "FAISS\nIndexBinaryFlat", "Spark job"], [sp["library"], sp["faiss"], sp["spark"]],
          color=["#4c72b0", "#dd8452", "#55a868"])
    b.set_ylabel("queries / s")
    b.set_title(f"Exact top-10 over {sp['n']:,} codes, {THREADS} threads")
    fig.tight_layout()
    fig.savefig(OUT / "search.png", dpi=110)
    print(f"\nwrote {OUT / 'report.md'} and {OUT / 'search.png'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=20_000)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--candidates", type=int, default=100, help="binary candidates per query before rescoring")
    p.add_argument("--corpus", type=int, default=1_000_000)
    p.add_argument("--dup-codes", type=int, default=50_000)
    p.add_argument("--radii", type=int, nargs="+", default=[8, 24])
    p.add_argument("--spark-partitions", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(THREADS)
    cfg = EncoderConfig()
    fx = FeatureExtractor(load_encoder("package", device="cpu", threads=THREADS), cfg)
    spec = build_spec(cfg, fx)
    table: list = []
    q = quality(fx, spec, args, table)
    sp = speed(spec, q["codes"], args)
    dup = duplicates(q["codes"], args)
    report(table, sp, dup, args)


if __name__ == "__main__":
    main()
