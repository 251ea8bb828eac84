"""Head accuracy against the standard frozen-feature reference, all measured in one run.

    python bench/heads_accuracy.py [--train-cap 3000] [--test-cap 1500]

For each SentEval (mr, cr, subj, mpqa, sst2, trec) and TweetEval task: encode the texts once with the default encoder
(fp32 features), then compare test accuracy of
  ref      scikit-learn LogisticRegression (lbfgs, C=1) on fp32 features,
  fp32     our linear head on fp32 features,
  bin0     our linear head on binary codes, zero thresholds (sign bits, what the table stores by default),
  binC     our linear head on binary codes, calibrated thresholds (per-dimension median of the training rows).
Bars: fp32 within 0.5 points of ref on average; binC within 2 points of fp32 on average.
Rows: bench/study.py's loader (the transfer study's rule): the data's own train/validation/test; sets without a test
split (mr, cr, subj, mpqa) get a deterministic 80/10/10 split by the project's id hash (encoder/hashing.py);
tweeteval/sentiment has no train split, so its validation rows are split 90/10 into train/validation; sets without a
validation split (trec) hold out 10% of train; then the first rows by id hash up to the caps, so the whole run fits a
2-core machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import DATA, require_data  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402

from study import SplitCaps, load_rows  # noqa: E402

SENTEVAL = ["mr", "cr", "subj", "mpqa", "sst2", "trec"]
TWEETEVAL = ["emoji", "emotion", "hate", "irony", "offensive", "sentiment", "stance_abortion", "stance_atheism",
             "stance_climate", "stance_feminist", "stance_hillary"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-cap", type=int, default=3000)
    ap.add_argument("--val-cap", type=int, default=500)
    ap.add_argument("--test-cap", type=int, default=1500)
    ap.add_argument("--tasks", nargs="*", default=None, help="e.g. senteval/mr tweeteval/irony")
    ap.add_argument("--layers", default=None, help="override encoder.layers: last, last4, all")
    ap.add_argument("--combine", default=None, help="override encoder.layer_combine: mean, concat")
    args = ap.parse_args()
    require_data()
    import torch
    from sklearn.linear_model import LogisticRegression

    from encoder.model import load_encoder
    from encoder.quantize import calibrate_thresholds
    from encoder.build_spec import build_spec
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
    from encoder.features import FeatureSettings
    from heads.data import Chunk
    from heads.tasks import TaskConfig
    from heads.train import TrainConfig, train_heads

    torch.set_num_threads(os.cpu_count() or 1)
    overrides = {k: v for k, v in (("layers", args.layers), ("layer_combine", args.combine)) if v is not None}
    cfg = EncoderConfig(features=FeatureSettings(**overrides))
    fx = FeatureExtractor(load_encoder(cfg.model, threads=os.cpu_count() or 1), cfg)
    spec0 = build_spec(cfg, fx)
    caps = SplitCaps(args.train_cap, args.val_cap, args.test_cap)
    tasks = args.tasks or [f"senteval/{t}" for t in SENTEVAL] + [f"tweeteval/{t}" for t in TWEETEVAL]
    fs = spec0.features
    print(f"encoder {spec0.model['name']} layers={list(fs.layers)} combine={fs.layer_combine} "
          f"pooling={fs.pooling} dim={spec0.dim}; caps "
          f"train/val/test {args.train_cap}/{args.val_cap}/{args.test_cap}; test accuracy in %")
    print("| task | train | test | classes | ref LR fp32 | ours fp32 | ours binary zero | ours binary calibrated |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    t0 = time.perf_counter()
    for name in tasks:
        data, _ = load_rows(DATA, name, ["label"], caps)
        feats = {s: fx.features(texts).values for s, (texts, _) in data.items()}
        y = {s: lab for s, (_, lab) in data.items()}
        n_cls = int(max(v.max() for v in y.values())) + 1
        ref = LogisticRegression(C=1.0, max_iter=2000).fit(feats["train"], y["train"])
        acc_ref = float(np.mean(ref.predict(feats["test"]) == y["test"]))
        thr = calibrate_thresholds(feats["train"])
        variants = {"fp32": lambda x: x, "bin0": lambda x: np.where(x > 0, 1.0, -1.0).astype(np.float32),
                    "binC": lambda x: np.where(x > thr, 1.0, -1.0).astype(np.float32)}
        accs = {}
        task = TaskConfig("t", "multiclass", ("label",), labels=tuple(str(i) for i in range(n_cls)))
        for key, f in variants.items():
            xs = {s: f(v) for s, v in feats.items()}

            def source(xs=xs):
                for s in ("train", "validation"):
                    ids = np.array([f"{s}{i}" for i in range(len(y[s]))])
                    yield Chunk(ids, xs[s], {"label": y[s]}, np.full(len(ids), s == "validation"))
            head = train_heads(source, [task], spec0.dim, TrainConfig(epochs=60, patience=5, lr=3e-3,
                                                                      weight_decay=1e-4))[0]
            with torch.no_grad():
                pred = head.module(torch.from_numpy(xs["test"])).argmax(1).numpy()
            accs[key] = float(np.mean(pred == y["test"]))
        rows.append((acc_ref, accs["fp32"], accs["bin0"], accs["binC"]))
        print(f"| {name} | {len(y['train'])} | {len(y['test'])} | {n_cls} | {100 * acc_ref:.1f} | "
              f"{100 * accs['fp32']:.1f} | {100 * accs['bin0']:.1f} | {100 * accs['binC']:.1f} |")
    r = 100 * np.array(rows)
    m = r.mean(axis=0)
    print(f"| **average** ({len(rows)} tasks) | | | | **{m[0]:.2f}** | **{m[1]:.2f}** | **{m[2]:.2f}** | **{m[3]:.2f}** |")
    print(f"fp32 heads vs reference: {m[1] - m[0]:+.2f} points (bar: within 0.5); calibrated binary vs fp32 heads: "
          f"{m[3] - m[1]:+.2f} points (bar: within 2); zero-threshold binary vs fp32: {m[2] - m[1]:+.2f}; "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
