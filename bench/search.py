"""Search over binary codes: retrieval quality against fp32 cosine, speed against FAISS, near-duplicates against brute
force, in one run.

    python bench/search.py [--texts 20000 --queries 500 --corpus 1000000]   # ~15 minutes on 2 cores; ../shared/data

(1) Quality. 20,000 real texts (12,400 GoEmotions train comments, the first by the id hash of bench/study.py, + the
    7,600 AG News test articles), encoded once with the default spec (all-MiniLM-L6-v2, last 4 layers averaged, mean
    pooling, normalised): recall@10 of the binary top-10 against the fp32 cosine top-10 for 500 of them as queries
    (self excluded), of the binary top-c (c = 20, 50, 100, 200) rescored by the int8 column (output.rescore: int8:
    the spec's rescore scales calibrated on 2,000 of the texts, the query in float) and by fp32, and of int8 alone;
    Spearman of each similarity against SICK relatedness (senteval/sick_e test, 4,906 pairs). Bytes per text beside
    each.
(2) Speed. Exact top-10 over 1,000,000 codes (the 20,000 real codes, each repeated 50 times with 8% of its bits
    flipped at random, so distances look like real ones), 256 real queries: the library (search/kernels.py) vs FAISS
    IndexBinaryFlat, both on 2 threads, same codes, taking turns (bench/timing.py: warm-up, medians of the repeats);
    the rescored search (binary top-c, then only those rows of a 1,000,000-row int8 column decoded and ranked) and
    int8 alone (every row decoded, blocked) against binary search alone; then the Spark search (jobs/neighbours.py,
    local[2]) vs the library on the same 1,000,000 codes.
(3) Near-duplicates on 50,000 codes (20,000 real + 30,000 copies with 0..12 bits flipped): pigeonhole blocks vs all
    pairs, pairs found and time.
(4) Bytes per row on disk of each table layout: the 20,000 real rows written by the jobs' own Parquet writer
    (jobs.tables.write_table: Spark, zstd), code columns from the footers and whole files.
Writes out/search/report.md, search.png and rescore.png (recall against queries/s, one point per setting). Encoded
features are cached in out/search/ (keyed by the texts).
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
from encoder.quantize import calibrate_scales, codes_to_column, quantize  # noqa: E402
from search.duplicates import near_duplicates  # noqa: E402
from search.kernels import cosine_rows, pair_hamming, rescore, top_k  # noqa: E402
from study import hash_order  # noqa: E402
from tests.oracles import brute_force_pairs  # noqa: E402
from timing import compare  # noqa: E402

OUT = ROOT / "out" / "search"
THREADS = 2
CANDIDATES = (20, 50, 100, 200)     # binary candidates per query that the int8 column re-ranks


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
    rspec = spec.replace(rescore="int8", rescore_scales=scales)     # the spec of a table with output.rescore: int8
    int8 = rspec.encode_rescore(x)                                   # its embedding_int8 column
    x8 = rspec.decode_rescore(int8)
    rng = np.random.default_rng(0)
    q = np.sort(rng.choice(len(x), args.queries, replace=False))
    k = 10
    cos = x[q] @ x.T
    cos[np.arange(len(q)), q] = -np.inf
    truth = np.argsort(-cos, axis=1, kind="stable")[:, :k]
    rows, _ = top_k(codes[q], codes, k + 1)
    binary = drop_self(rows, q, k)
    cos8 = x[q] @ (x8 / np.linalg.norm(x8, axis=1, keepdims=True)).T
    cos8[np.arange(len(q)), q] = -np.inf
    rows8 = np.argsort(-cos8, axis=1, kind="stable")[:, :k]
    res = {"binary": recall(binary, truth), "int8": recall(rows8, truth)}
    for c in sorted(set(CANDIDATES) | {args.candidates}):
        cand, _ = top_k(codes[q], codes, c + 1)
        cand = drop_self(cand, q, c)
        re8, _ = rescore(x[q], cand, int8, k, rspec.decode_rescore)      # what CodeIndex and the job run
        res[f"binary{c}+int8"] = recall(re8, truth)
        if c == args.candidates:
            re32, _ = rescore(x[q], cand, x, k)
            res["binary+fp32"] = recall(re32, truth)
    # SICK relatedness
    sick = pq.read_table(require_data() / "senteval" / "sick_e" / "test.parquet",
                         columns=["text", "text_pair", "relatedness_score"]).to_pydict()
    a = features(fx, sick["text"], "sick_a")
    b = features(fx, sick["text_pair"], "sick_b")
    gold = np.asarray(sick["relatedness_score"], np.float64)
    ca, cb = spec.encode_features(a), spec.encode_features(b)
    a8, b8 = rspec.decode_rescore(rspec.encode_rescore(a)), rspec.decode_rescore(rspec.encode_rescore(b))
    sp = {"fp32": spearman(cosine_rows(a, b), gold), "binary": spearman(-pair_hamming(ca, cb), gold),
          "int8": spearman(cosine_rows(a8, b8), gold),
          # the rescored similarity: the query's float feature against the stored int8 vector (the job's cosine)
          "rescored": spearman(cosine_rows(a, b8), gold)}
    nb, d = spec.n_bytes, x.shape[1]
    rows_out = [("fp32 cosine (exhaustive)", 4 * d, 1.0, sp["fp32"]),
                ("binary Hamming (exhaustive)", nb, res["binary"], sp["binary"]),
                ("int8 cosine (exhaustive)", d, res["int8"], sp["int8"])]
    rows_out += [(f"binary top-{c}, rescored by int8", nb + d, res[f"binary{c}+int8"], sp["rescored"])
                 for c in CANDIDATES]
    rows_out += [(f"binary top-{args.candidates}, rescored by fp32", nb + 4 * d, res["binary+fp32"], sp["fp32"])]
    print(f"\n(1) Quality: {len(texts):,} texts, {len(q)} queries, recall@10 against the fp32 cosine top-10; "
          f"Spearman vs SICK relatedness ({len(gold):,} test pairs; rescored: query fp32 vs stored int8, "
          f"int8: both int8 = SQL int8_cosine)")
    print(f"{'method':44s} {'bytes/text':>10s} {'recall@10':>10s} {'Spearman':>9s}")
    for name, by, r, s in rows_out:
        print(f"{name:44s} {by:10d} {r:10.3f} {s:9.3f}")
        table.append((name, by, r, s))
    r100 = res.get("binary100+int8", res[f"binary{args.candidates}+int8"])
    print(f"BAR recall@10 of the binary top-100 rescored by int8 vs fp32 cosine: {r100:.3f} (bar >= 0.85): "
          f"{'met' if r100 >= 0.85 else 'NOT met'}")
    return {"codes": codes, "x": x, "int8": int8, "rspec": rspec, "texts": texts, "recall": res}


def speed(spec, q: dict, args) -> dict:
    import faiss

    codes = q["codes"]
    rng = np.random.default_rng(1)
    reps = -(-args.corpus // len(codes))
    bits = np.unpackbits(np.tile(codes, (reps, 1))[:args.corpus], axis=1)
    flip = rng.random(bits.shape) < 0.08
    flip[:len(codes)] = False                         # the real codes themselves stay
    big = np.packbits(bits ^ flip, axis=1)
    del bits, flip
    qidx = rng.choice(len(codes), 256, replace=False)
    queries = codes[qidx]
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
    resc = rescore_speed(spec, q["rspec"], big, q["int8"], qidx, q["x"], args)
    spark_qps = spark_search(spec, big, queries, rows, dist, args)
    print(f"Spark search (local[2], {args.spark_partitions} partitions, warm) {spark_qps:,.1f} queries/s vs the library "
          f"in-process {lib_qps:,.0f}: ratio {spark_qps / lib_qps:.2f}x")
    return {"library": lib_qps, "faiss": faiss_qps, "spark": spark_qps, "n": len(big), "rescore": resc}


def rescore_speed(spec, rspec, big: np.ndarray, int8_real: np.ndarray, queries_idx: np.ndarray, x: np.ndarray,
                  args) -> dict:
    """Queries/s over 1,000,000 rows: binary top-10 alone, binary top-c + int8 rescoring (only the candidates' rows
    of the int8 column decoded), and int8 alone (every row decoded, in blocks), same queries, interleaved."""
    reps = -(-len(big) // len(int8_real))
    int8 = np.ascontiguousarray(np.tile(int8_real, (reps, 1))[:len(big)])      # 384 MB: the stored column
    qv, qc = x[queries_idx], big[queries_idx]          # the queries' float features and their codes (real rows)
    k = 10

    def rescored(c: int):
        cand, _ = top_k(qc, big, c)
        return rescore(qv, cand, int8, k, rspec.decode_rescore)

    def int8_alone(block: int = 65536):
        qn = qv / np.linalg.norm(qv, axis=1, keepdims=True)
        best_s = np.full((len(qv), k), -np.inf, np.float32)
        best_r = np.zeros((len(qv), k), np.int64)
        for s0 in range(0, len(int8), block):
            v = rspec.decode_rescore(int8[s0:s0 + block])
            sc = qn @ (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).T
            allsc = np.concatenate([best_s, sc], axis=1)
            allr = np.concatenate([best_r, np.arange(s0, s0 + len(v))[None, :].repeat(len(qv), 0)], axis=1)
            top = np.argpartition(-allsc, k, axis=1)[:, :k]
            best_s, best_r = np.take_along_axis(allsc, top, 1), np.take_along_axis(allr, top, 1)
        return best_r

    cands = {"binary top-10": lambda: top_k(qc, big, k)}
    cands |= {f"binary top-{c} + int8": (lambda c=c: rescored(c)) for c in CANDIDATES}
    cands["int8 alone"] = int8_alone
    t = compare(cands, args.repeats, warmup={n: (lambda f=f: f()) for n, f in cands.items() if n != "int8 alone"})
    base = t.rate("binary top-10", len(qv))
    out = {n: t.rate(n, len(qv)) for n in cands}
    print(f"Rescoring over {len(big):,} rows ({len(qv)} queries, {THREADS} threads, median of {args.repeats}; int8 "
          "rows read: only the candidates'):")
    for n, qps in out.items():
        print(f"  {n:24s} {qps:9,.1f} queries/s  {qps / base:.2f}x of binary top-10 alone")
    r = out["binary top-100 + int8"] / base
    print(f"BAR rescored search (c = 100) vs binary search alone over {len(big):,} codes: {r:.2f}x (bar >= 0.5x): "
          f"{'met' if r >= 0.5 else 'NOT met'}")
    return out


def disk_bytes(q: dict, args) -> list:
    """Bytes per row on disk of each table layout, written by the jobs' own writer (Spark, zstd): code columns from
    the Parquet footers, and the whole files (id, text_sha256, n_tokens and truncated included)."""
    from encoder.hashing import text_sha256
    from jobs.common import SparkSettings, spark_session
    from jobs.tables import write_table

    rspec, x, texts = q["rspec"], q["x"], q["texts"]
    spec = rspec
    n = len(texts)
    ids = [f"t{i:06d}" for i in range(n)]
    core = {"id": ids, "text_sha256": text_sha256(texts), "n_tokens": pa.array(np.full(n, 40, np.int32)),
            "truncated": pa.array(np.zeros(n, bool))}
    layouts = {"binary (default, 48 B code)": {"embedding": codes_to_column(spec.encode_features(x))},
               "binary + embedding_int8 (output.rescore: int8)": {
                   "embedding": codes_to_column(spec.encode_features(x)),
                   "embedding_int8": codes_to_column(rspec.encode_rescore(x))},
               "int8 only (encoder.quantization: int8)": {
                   "embedding": codes_to_column(quantize(x, "int8", scales=rspec.rescore_scales))},
               "fp32 only (encoder.quantization: fp32)": {"embedding": codes_to_column(quantize(x, "fp32"))}}
    spark = spark_session(SparkSettings(), "bench_search_bytes")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, cols) in enumerate(layouts.items()):
            src = Path(tmp) / f"src{i}.parquet"
            t = pa.table({"id": core["id"], **cols, "text_sha256": core["text_sha256"], "n_tokens": core["n_tokens"],
                          "truncated": core["truncated"]})
            pq.write_table(t, src)
            df = spark.read.parquet(str(src)).repartition(2, "id").sortWithinPartitions("id")
            dest = Path(tmp) / f"layout{i}"
            write_table(df, dest, "zstd")
            files = sorted(dest.glob("*.parquet"))
            code_cols = [c for c in cols]
            col_bytes = {c: 0 for c in code_cols}
            for f in files:
                md = pq.read_metadata(f)
                for c in code_cols:
                    j = md.schema.names.index(c)
                    col_bytes[c] += sum(md.row_group(g).column(j).total_compressed_size for g in range(md.num_row_groups))
            raw = sum(len(cols[c].buffers()[2]) // n for c in code_cols)
            out.append((name, raw, sum(col_bytes.values()) / n, sum(f.stat().st_size for f in files) / n))
    print(f"\n(4) Bytes per row on disk, {n:,} real rows, Spark's Parquet writer with zstd (jobs.tables.write_table)")
    print(f"{'layout':50s} {'code bytes':>10s} {'code cols on disk':>18s} {'ratio':>6s} {'whole files':>12s}")
    for name, raw, col, whole in out:
        print(f"{name:50s} {raw:10d} {col:18.1f} {col / raw:6.3f} {whole:12.1f}")
    name, raw, col, _ = out[1]
    print(f"BAR table with the int8 column: code columns {col:.1f} B/row vs 48 + dim = {raw}: {col / raw:.3f}x "
          f"(bar <= 1.02x): {'met' if col / raw <= 1.02 else 'NOT met'}")
    return out


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


def rescore_points(sp: dict, recall: dict) -> list[tuple[str, float, float, int]]:
    """One point per search setting: (name, recall@10, queries/s over 1M rows, bytes/row it reads)."""
    r = sp["rescore"]
    pts = [("binary top-10", recall["binary"], r["binary top-10"], 48)]
    pts += [(f"binary top-{c} + int8", recall[f"binary{c}+int8"], r[f"binary top-{c} + int8"], 48 + 384)
            for c in CANDIDATES]
    return pts + [("int8 alone", recall["int8"], r["int8 alone"], 384)]


def report(quality_rows, sp, dup, disk, args, recall) -> None:
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
    pts = rescore_points(sp, recall)
    base = pts[0][2]
    lines += ["", "## Rescoring", "", f"Over {sp['n']:,} rows, 256 queries, {THREADS} threads.", "",
              "| setting | recall@10 vs fp32 top-10 | queries/s | vs binary alone |", "|---|---|---|---|"]
    lines += [f"| {n} | {r:.3f} | {qps:,.1f} | {qps / base:.2f}x |" for n, r, qps, _ in pts]
    lines += ["", "## Bytes per row on disk", "", "| layout | code bytes | code columns on disk | ratio | whole files |",
              "|---|---|---|---|---|"]
    lines += [f"| {n} | {raw} | {col:.1f} | {col / raw:.3f}x | {whole:.1f} |" for n, raw, col, whole in disk]
    lines += ["", "![search](search.png)", "", "![rescoring](rescore.png)"]
    (OUT / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for n, r, qps, _ in pts:
        ax.scatter([qps], [r], s=40, color="#4c72b0" if "+" in n else "#dd8452")
        ax.annotate(n, (qps, r), textcoords="offset points", xytext=(6, -3), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(p[2] for p in pts) / 1.5, max(p[2] for p in pts) * 4)    # room for the labels
    ax.set_xlabel(f"queries / s over {sp['n']:,} rows ({THREADS} threads, log scale)")
    ax.set_ylabel("recall@10 against the fp32 cosine top-10")
    ax.set_ylim(0, 1.05)
    ax.set_title("Binary candidates rescored by the int8 column")
    fig.tight_layout()
    fig.savefig(OUT / "rescore.png", dpi=110)
    plt.close(fig)
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
    print(f"\nwrote {OUT / 'report.md'}, {OUT / 'search.png'} and {OUT / 'rescore.png'}")


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
    sp = speed(spec, q, args)
    dup = duplicates(q["codes"], args)
    disk = disk_bytes(q, args)
    report(table, sp, dup, disk, args, q["recall"])


if __name__ == "__main__":
    main()
