"""Long texts: `truncate` (256 tokens) vs `chunks` (overlapping windows pooled into one feature), in one run.

    python bench/long_texts.py [--train 4000 --val 500 --test 2500]     # ~20 minutes on 2 cores; needs ../shared/data
    python bench/long_texts.py --quick         # every step on small inputs, ~2 minutes (figures mean little)

(1) blog_authorship, its five tasks (gender, age, age_group, industry, sign): test accuracy of linear heads on
    fp32 and binary features from each strategy, and encode texts/s (the two take turns on each split). Rows: the
    first by the project's id hash (bench/study.py, encoder/hashing.py) up to the caps;
    validation chooses the epoch, test is read once. Window pooling variants (token-weighted mean = the spec's,
    max, first window + mean) are pooled from the same window features.
(2) Control: the longest texts of ag_news (all within one window): identical codes under both strategies.
(3) Cost per text against token count: real blog text cut to 128..4,096 tokens, encoded with chunks; cost per token
    relative to texts of one full window (256 tokens) and to short texts (the median blog post); medians of 3 after a
    warm-up (bench/timing.py).
Writes out/long_texts/report.md and long_texts.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT, require_data  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from encoder.build_spec import build_spec  # noqa: E402
from encoder.encode import FeatureExtractor  # noqa: E402
from encoder.encoder_config import EncoderConfig  # noqa: E402
from encoder.features import FeatureSettings  # noqa: E402
from encoder.model import load_encoder  # noqa: E402
from encoder.windows import pool_windows  # noqa: E402
from heads.data import Chunk  # noqa: E402
from heads.inputs import head_inputs  # noqa: E402
from heads.tasks import TaskConfig  # noqa: E402
from heads.train import TrainConfig, evaluate, train_heads  # noqa: E402
from study import hash_order  # noqa: E402
from timing import compare  # noqa: E402

TASKS = ("gender", "age", "age_group", "industry", "sign")
SPLITS = ("train", "validation", "test")


def load_blog(caps: dict[str, int]) -> dict[str, dict]:
    d = require_data() / "blog_authorship"
    out = {}
    for split in SPLITS:
        t = pq.read_table(d / f"{split}.parquet", columns=["id", "text", *TASKS]).to_pydict()
        order = hash_order(t["id"])[:caps[split]]
        out[split] = {k: [t[k][i] for i in order] for k in t}
    return out


def window_features(fx: FeatureExtractor, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every window's pooled feature, its owner text and weight (windows, batches, model: what chunks costs)."""
    ids, owner, weights, _, _ = fx.windows(texts)
    return fx.encode_ids(ids, len(texts)), owner, weights


def pool_variant(values, owner, weights, n, how: str) -> np.ndarray:
    if how == "mean":
        return pool_windows(values, owner, weights, n, True)
    if how == "max":
        out = np.full((n, values.shape[1]), -np.inf, np.float32)
        np.maximum.at(out, owner, values)
    else:  # first window + mean of windows
        out = values[:n] + pool_windows(values, owner, weights, n, True)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def head_accuracy(x: dict[str, np.ndarray], y: dict[str, np.ndarray], n_classes: int) -> float:
    task = TaskConfig("t", "multiclass", ("y",), labels=tuple(str(i) for i in range(n_classes)))

    def chunk(split, val):
        keep = y[split] >= 0
        return Chunk(np.array([f"{split}{i}" for i in range(int(keep.sum()))]), x[split][keep],
                     {"y": y[split][keep]}, np.full(int(keep.sum()), val))

    def source():
        yield chunk("train", False)
        yield chunk("validation", True)
    head = train_heads(source, [task], x["train"].shape[1], TrainConfig(epochs=40, patience=5, lr=3e-3))[0]
    m, _ = evaluate(head, chunk("test", True))
    return float(m["accuracy"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--test", type=int, default=2500)
    ap.add_argument("--quick", action="store_true", help="60/30/60 posts, 200 control texts, lengths up to 1,024 "
                                                         "tokens, one repeat (a smoke run; out/long_texts_quick)")
    ap.add_argument("--out", default=None, help="report folder (default out/long_texts)")
    args = ap.parse_args()
    if args.quick:
        args.train, args.val, args.test = min(args.train, 60), min(args.val, 30), min(args.test, 60)
    args.out = args.out or str(ROOT / "out" / ("long_texts_quick" if args.quick else "long_texts"))
    repeats = 1 if args.quick else 3
    torch.set_num_threads(2)
    loaded = load_encoder("package", threads=2)
    trunc_cfg, chunk_cfg = EncoderConfig(), EncoderConfig(features=FeatureSettings(long_text="chunks"))
    trunc, chunk = FeatureExtractor(loaded, trunc_cfg), FeatureExtractor(loaded, chunk_cfg)
    spec = build_spec(trunc_cfg, trunc)
    fp32, binary = spec.replace(quantization="fp32"), spec
    fs, cs = spec.features, chunk_cfg.features
    lines: list[str] = ["# Long texts: truncate vs chunks", "",
                        f"Encoder: {spec.model['name']}, layers {list(fs.layers)} {fs.layer_combine}, {fs.pooling} "
                        f"pooling, {spec.dim} dims; chunks: window {cs.chunk_tokens} tokens, stride {cs.chunk_stride}, "
                        f"at most {cs.max_chunks} windows; 2 threads, cpu.", ""]

    def say(line=""):
        print(line)
        lines.append(line)

    # (1) blog_authorship ---------------------------------------------------------------------------------------
    data = load_blog({"train": args.train, "validation": args.val, "test": args.test})
    feats: dict[str, dict[str, np.ndarray]] = {}
    seconds = {"truncate": 0.0, "chunks": 0.0}
    tokens = []
    for split in SPLITS:
        texts = data[split]["text"]
        t = compare({"truncate": lambda: trunc.features(texts), "chunks": lambda: window_features(chunk, texts)},
                    repeats=1, warmup=0)       # one pass each over thousands of posts, taking turns
        for k in seconds:
            seconds[k] += t.median(k)
        f_trunc = t.results["truncate"]
        values, owner, weights = t.results["chunks"]
        tokens.append(f_trunc.n_tokens)
        feats.setdefault("truncate", {})[split] = f_trunc.values
        for how in ("mean", "max", "first+mean"):
            feats.setdefault(f"chunks {how}", {})[split] = pool_variant(values, owner, weights, len(texts), how)
    tok = np.concatenate(tokens)
    n_texts = sum(len(data[s]["text"]) for s in SPLITS)
    say(f"(1) blog_authorship: {args.train}/{args.val}/{args.test} train/validation/test posts; tokens median "
        f"{int(np.median(tok))}, p95 {int(np.percentile(tok, 95))}; {np.mean(tok > 256):.0%} longer than 256.")
    say(f"    encode: truncate {n_texts / seconds['truncate']:.1f} texts/s, chunks {n_texts / seconds['chunks']:.1f} "
        "texts/s")
    say("")
    say("| task | classes | " + " | ".join(f"{v} fp32 | {v} binary" for v in feats) + " |")
    say("|---|---|" + "---|---|" * len(feats))
    acc: dict[str, list[float]] = {}
    for task in TASKS:
        raw = {s: np.asarray(data[s][task], np.int64) for s in SPLITS}
        values = sorted({int(v) for s in SPLITS for v in raw[s] if v >= 0})
        remap = {v: i for i, v in enumerate(values)}
        y = {s: np.array([remap.get(int(v), -1) for v in raw[s]], np.int64) for s in SPLITS}
        row = []
        for variant, fs in feats.items():
            for qname, q in (("fp32", fp32), ("binary", binary)):
                x = {s: head_inputs(q, q.encode_features(fs[s])) for s in SPLITS}
                a = head_accuracy(x, y, len(values))
                acc.setdefault(f"{variant} {qname}", []).append(a)
                row.append(f"{100 * a:.1f}")
        say(f"| {task} | {len(values)} | " + " | ".join(row) + " |")
    avg = {k: 100 * float(np.mean(v)) for k, v in acc.items()}
    say("| **average** | | " + " | ".join(f"**{avg[k]:.2f}**" for k in acc) + " |")
    say("")
    for q in ("fp32", "binary"):
        gain = avg[f"chunks mean {q}"] - avg[f"truncate {q}"]
        say(f"bar: chunks >= truncate + 1.0 point ({q}): {gain:+.2f} points -> {'met' if gain >= 1.0 else 'not met'}")
    best = max(("mean", "max", "first+mean"), key=lambda h: avg[f"chunks {h} fp32"] + avg[f"chunks {h} binary"])
    say(f"window pooling measured best (fp32 + binary average): {best}")
    say("")

    # (2) control: the longest ag_news texts --------------------------------------------------------------------
    ag = pq.read_table(require_data() / "ag_news" / "test.parquet", columns=["text"]).column("text").to_pylist()
    ag = sorted(ag, key=len, reverse=True)[:200 if args.quick else 1500]
    ct, cc = trunc.features(ag), chunk.features(ag)
    within = cc.n_tokens <= chunk_cfg.features.chunk_tokens
    same = binary.encode_features(ct.values[within]) == binary.encode_features(cc.values[within])
    say(f"(2) control, the {len(ag):,} longest ag_news texts (tokens max {int(ct.n_tokens.max())}): {int(within.sum())} "
        f"within one window; identical binary codes {int(same.all(axis=1).sum())} of {int(within.sum())} "
        f"({'bar met' if same.all() else 'bar not met'}); bits differing {int((~same).sum())}")
    say("")

    # (3) cost per text against token count ---------------------------------------------------------------------
    pool_text = " ".join(data["train"]["text"][:400])
    ids = chunk.loaded.tokenizer(pool_text, add_special_tokens=False, verbose=False)["input_ids"]
    say(f"(3) cost per text against token count (chunks; each text a different cut of real blog text; median of "
        f"{repeats})")
    say("")
    say("| tokens | texts | s per text | s per 1k tokens | vs 256-token texts | vs median-length texts |")
    say("|---|---|---|---|---|---|")
    cost, counts = {}, {}
    sizes = ((int(np.median(tok)), 64), (256, 32), (512, 16), (1024, 8), (2048, 8), (4096, 4))
    for n_tok, n in sizes[:4] if args.quick else sizes:
        texts = [chunk.loaded.tokenizer.decode(ids[k * 50: k * 50 + n_tok - 2]) for k in range(n)]
        t = compare({"chunks": lambda: chunk.features(texts)}, repeats,
                    warmup={"chunks": lambda: chunk.features(texts[:1])})
        cost[n_tok], counts[n_tok] = t.per_item("chunks", n), n
    base_med, base_256 = cost[int(np.median(tok))] / int(np.median(tok)), cost[256] / 256
    worst = 1.0
    for n_tok, c in cost.items():
        per = c / n_tok
        worst = max(worst, per / base_med) if n_tok > 256 else worst
        say(f"| {n_tok} | {counts[n_tok]} | {c:.3f} | {1000 * per:.3f} | {per / base_256:.2f}x | {per / base_med:.2f}x |")
    say("")
    long_ratio = max(cost[n] / n for n in cost if n > 256) / base_256
    say(f"bar: cost per token with chunks within 1.2x of short texts: {long_ratio:.2f}x of 256-token texts, "
        f"{worst:.2f}x of median-length texts")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    keys = ["truncate fp32", "chunks mean fp32", "truncate binary", "chunks mean binary"]
    xs = np.arange(len(TASKS))
    for k, key in enumerate(keys):
        a1.bar(xs + (k - 1.5) * 0.2, [100 * v for v in acc[key]], 0.2, label=key)
    a1.set_xticks(xs, TASKS)
    a1.set_ylabel("test accuracy (%)")
    a1.set_title("blog_authorship: truncate (256) vs chunks")
    a1.legend(fontsize=8)
    ns = sorted(cost)
    a2.plot(ns, [cost[n] for n in ns], "o-")
    a2.set_xscale("log", base=2)
    a2.set_yscale("log", base=2)
    a2.set_xlabel("tokens per text")
    a2.set_ylabel("seconds per text (chunks)")
    a2.set_title("encode cost grows linearly with length")
    fig.tight_layout()
    fig.savefig(out / "long_texts.png", dpi=110)
    print(f"wrote {out / 'report.md'} and {out / 'long_texts.png'}")


if __name__ == "__main__":
    main()
