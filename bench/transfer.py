"""The transfer study: does multi-task fine-tuning make the shared encoder (and its 48-byte codes) better on tasks it
never saw? All figures in one run, on 2 CPU cores in under an hour by row caps (--scale 2 doubles them).

    python bench/transfer.py [--steps 150 --variants plain,ste,ste_mixed --scale 1]    # make study, ~50 minutes

Task groups are fixed so figures stay comparable across changes:
  tune on   senteval/sst2, senteval/trec, senteval/subj, tweeteval/emotion, tweeteval/hate, tweeteval/sentiment,
            tweeteval/emoji, goemotions (28 labels), ag_news (hash split), blog_authorship/gender
  held out  senteval/mr, senteval/cr, senteval/mpqa, senteval/sst5, tweeteval/irony, tweeteval/offensive, the five
            tweeteval/stance_* tasks, blog_authorship/age_group (never seen by tuning, early stopping or settings)
Steps:
 1. Tune the packaged encoder (heads.multitask, the library the train_encoder job runs) once per variant:
    plain (heads on float features), ste (heads on the stored sign bits, straight-through), ste_mixed (both paths).
    Tuning truncates texts at 64 tokens (half the cost of 128 on 2 cores). Every variant but the opt-in ste_nokeep
    keeps the encoder general (keep_general: 1 - cos to the base features). Early stopping on the tuning tasks'
    validation splits.
 2. Encode every task's train/validation/test rows with each encoder (features as the default spec: last4 layers,
    mean, mean pooling, unit length; max_length 128), fp32 and binary (sign).
 3. Frozen-feature linear heads (scikit-learn logistic regression, C in {0.1, 1, 10} chosen on validation; one per
    label for goemotions) -> test accuracy (goemotions: micro-F1).
 4. Similarity: Spearman of cosine (fp32) and of -Hamming (binary) against senteval/sick_e relatedness (test pairs).
 5. Pooling table for the tuned encoder on the held-out tasks: layers x positions, fp32 and binary, bytes per text.
 6. Post-hoc help for the bits on the held-out tasks: zero thresholds vs per-dimension medians vs an ITQ rotation
    (Gong & Lazebnik 2011) fitted on a calibration sample of tuning-task texts.
Writes out/study/report.md, out/study/*.png and out/study/results.json; prints each bar with its figure.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:     # imported by crossover.py: keep the project first
    sys.path.insert(0, str(Path(__file__).resolve().parent))     # (bench/heads.py would shadow the heads package)
from _setup import ROOT, require_data  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

OUT = ROOT / "out" / "study"
MODELS = OUT / "models"     # the tuned encoders (bench/crossover.py uses ste_mixed from here)
TUNE = ["senteval/sst2", "senteval/trec", "senteval/subj", "tweeteval/emotion", "tweeteval/hate",
        "tweeteval/sentiment", "tweeteval/emoji", "goemotions", "ag_news", "blog_authorship/gender"]
HELD_OUT = ["senteval/mr", "senteval/cr", "senteval/mpqa", "senteval/sst5", "tweeteval/irony", "tweeteval/offensive",
            "tweeteval/stance_abortion", "tweeteval/stance_atheism", "tweeteval/stance_climate",
            "tweeteval/stance_feminist", "tweeteval/stance_hillary", "blog_authorship/age_group"]
MAX_LENGTH = 128          # evaluation (every encoder, every task)
TUNE_MAX_LENGTH = 64      # tuning: 5 s per 32-text step at 128 tokens on 2 cores, about half at 64
C_GRID = (0.1, 1.0, 10.0)
LAYER_CHOICES = {"last": ("last", "mean"), "last4 mean": ("last4", "mean"), "last4 concat": ("last4", "concat"),
                 "all mean": ("all", "mean")}
POSITIONS = ("cls", "mean", "max")
DEFAULT = ("last4 mean", "mean")
REMOVED: dict[str, int] = {}     # rows dropped from evaluation because the tuning saw their text


def _h(i: str) -> int:
    return int(hashlib.sha1(i.encode()).hexdigest()[:12], 16)


# -- data -------------------------------------------------------------------------------------------------------
def task_spec(name: str, labels: dict) -> tuple[str, str, list[str], int]:
    """-> (folder, kind, label columns, classes)."""
    if name == "goemotions":
        cols = list(labels["goemotions"]["multi_label_columns"])
        return "goemotions", "multilabel", cols, len(cols)
    if name.startswith("blog_authorship/"):
        col = name.split("/")[1]
        return "blog_authorship", "multiclass", [col], len(labels["blog_authorship"][col])
    return name, "multiclass", ["label"], len(labels[name]["label"])


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def load_rows(data: Path, folder: str, cols: list[str], caps: dict[str, int], exclude: frozenset[str] = frozenset(),
              exclude_splits: tuple[str, ...] = ()) -> dict[str, tuple[list[str], np.ndarray]]:
    """-> {train|validation|test: (texts, labels int64[n] or [n, L])}: the data's own splits, else hash splits
    (80/10/10 for one-file sets; 10% of train for validation), rows without a label dropped, rows of
    ``exclude_splits`` whose normalised text is in ``exclude`` dropped (texts the tuning saw), then the first rows by
    sha1(id) up to the caps."""
    parts = {}
    for split in ("train", "validation", "test"):
        f = data / folder / f"{split}.parquet"
        if f.exists():
            t = pq.read_table(f, columns=["id", "text", *cols]).to_pydict()
            y = np.stack([np.asarray(t[c], np.int64) for c in cols], axis=1)
            parts[split] = list(zip(t["id"], t["text"], y))
    if "train" not in parts and "test" in parts and "validation" not in parts:      # ag_news: test only
        rows = parts.pop("test")
        parts = {"train": [r for r in rows if _h(r[0]) % 10 < 8], "validation": [r for r in rows if _h(r[0]) % 10 == 8],
                 "test": [r for r in rows if _h(r[0]) % 10 == 9]}
    if "test" not in parts:
        rows = parts.pop("train")
        parts = {"train": [r for r in rows if _h(r[0]) % 10 < 8], "validation": [r for r in rows if _h(r[0]) % 10 == 8],
                 "test": [r for r in rows if _h(r[0]) % 10 == 9]}
    if "train" not in parts:                                                        # tweeteval/sentiment
        rows = parts.pop("validation")
        parts["train"] = [r for r in rows if _h(r[0]) % 10 != 0]
        parts["validation"] = [r for r in rows if _h(r[0]) % 10 == 0]
    if "validation" not in parts:                                                   # trec
        rows = parts.pop("train")
        parts["train"] = [r for r in rows if _h(r[0]) % 10 != 0]
        parts["validation"] = [r for r in rows if _h(r[0]) % 10 == 0]
    out = {}
    for split, rows in parts.items():
        rows = [r for r in rows if (r[2] >= 0).any()]
        if split in exclude_splits:
            kept = [r for r in rows if norm(r[1]) not in exclude]
            REMOVED[folder] = REMOVED.get(folder, 0) + len(rows) - len(kept)
            rows = kept
        rows = sorted(rows, key=lambda r: _h(r[0]))[: caps[split]]
        y = np.stack([r[2] for r in rows])
        out[split] = ([r[1] for r in rows], y if len(cols) > 1 else y[:, 0])
    return out


# -- features ---------------------------------------------------------------------------------------------------
def encode(model, tokenizer, texts: list[str], combos: list[tuple[str, str]], budget: int = 4096
           ) -> dict[tuple[str, str], np.ndarray]:
    """Texts -> {(layers, position): float32[n, D]} from one forward pass per batch (all hidden states kept)."""
    import torch

    from encoder.batching import plan_batches, restore_order
    from encoder.pooling import pool_layers, resolve_layers

    ids = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, return_attention_mask=False,
                    return_token_type_ids=False)["input_ids"]
    lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
    batches = plan_batches(lengths, budget, 256)
    n_layers = model.config.num_hidden_layers
    parts: dict = {c: [] for c in combos}
    model.eval()
    with torch.inference_mode():
        for b in batches:
            rows = [ids[i] for i in b]
            w = max(map(len, rows))
            x = torch.zeros((len(rows), w), dtype=torch.long)
            m = torch.zeros((len(rows), w), dtype=torch.long)
            for r, row in enumerate(rows):
                x[r, :len(row)] = torch.tensor(row)
                m[r, :len(row)] = 1
            hidden = model(input_ids=x, attention_mask=m, output_hidden_states=True).hidden_states
            for c in combos:
                layers, combine = LAYER_CHOICES[c[0]]
                parts[c].append(pool_layers(hidden, m, resolve_layers(layers, n_layers), c[1], combine,  # type: ignore
                                            True).numpy())
    return {c: restore_order(parts[c], batches, len(texts)) for c in combos}


def binary(x: np.ndarray, thresholds: np.ndarray | None = None, rotation: tuple | None = None) -> np.ndarray:
    """The stored code as a head sees it: +1/-1 through the one quantizer (optionally after an ITQ rotation)."""
    from encoder.quantize import dequantize, quantize

    if rotation is not None:
        mu, w = rotation
        x = (x - mu) @ w
    return dequantize(quantize(x, "binary", thresholds), x.shape[1], "binary")


def itq(x: np.ndarray, iters: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Iterative quantization (Gong & Lazebnik 2011): PCA then the rotation R minimising ||sign(VR) - VR||."""
    mu = x.mean(0)
    xc = x - mu
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    p = vt.T                                                       # (d, d): all components, bits = dims
    v = xc @ p
    r = np.linalg.qr(np.random.default_rng(seed).standard_normal((p.shape[1],) * 2))[0]
    for _ in range(iters):
        b = np.sign(v @ r)
        u, _, wt = np.linalg.svd(b.T @ v)
        r = (u @ wt).T
    return mu.astype(np.float32), (p @ r).astype(np.float32)


# -- heads ------------------------------------------------------------------------------------------------------
def probe(x: dict[str, np.ndarray], y: dict[str, np.ndarray], multilabel: bool, with_validation: bool = False
          ) -> float | tuple[float, float]:
    """Logistic regression with C chosen on validation -> test accuracy (micro-F1 for multi-label); with
    ``with_validation``, (the chosen C's validation score, test score)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    scale = 1.0 if np.abs(x["train"]).max() == 1.0 else math.sqrt(x["train"].shape[1])   # heads/inputs.py

    def fit(c: float):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if not multilabel:
                return LogisticRegression(C=c, max_iter=300).fit(x["train"] * scale, y["train"])
            models = []
            for j in range(y["train"].shape[1]):
                known = y["train"][:, j] >= 0
                yy = y["train"][known, j]
                models.append(int(yy[0]) if yy.min() == yy.max() else
                              LogisticRegression(C=c, max_iter=300).fit(x["train"][known] * scale, yy))
            return models

    def score(m, split: str) -> float:
        if not multilabel:
            return float((m.predict(x[split] * scale) == y[split]).mean())
        pred = np.stack([np.full(len(x[split]), mj) if isinstance(mj, int) else mj.predict(x[split] * scale)
                         for mj in m], axis=1)
        k = y[split] >= 0
        return float(f1_score(y[split][k], pred[k], average="binary"))

    fitted = [fit(c) for c in C_GRID]
    val = [score(m, "validation") for m in fitted]
    best = max(range(len(C_GRID)), key=lambda i: val[i])            # first best: smallest C wins ties
    test = 100 * score(fitted[best], "test")
    return (100 * val[best], test) if with_validation else test


def tuning_rows(data: Path, labels: dict, scale: float = 1.0) -> tuple[dict, dict, frozenset[str]]:
    """-> (task specs of every study task, the tuning tasks' train/validation rows, the normalised texts the tuning
    sees). "Never seen": SST is built from MR's sentences, SST-5 shares SST-2's, age_group the blog posts gender
    tunes on, so evaluation rows whose text is in the last set are dropped (held-out tasks: all splits; tuning
    tasks: test)."""
    tune_caps = {"train": int(4000 * scale), "validation": int(150 * scale), "test": 1}
    specs = {n: task_spec(n, labels) for n in TUNE + HELD_OUT}
    tune_rows = {n: load_rows(data, specs[n][0], specs[n][2], tune_caps) for n in TUNE}
    seen = frozenset(norm(t) for n in TUNE for sp in ("train", "validation") for t in tune_rows[n][sp][0])
    return specs, tune_rows, seen


def task_data(name: str, spec: tuple, rows: dict):
    """A study task's train/validation rows as heads.multitask trains on them."""
    from heads.multitask import TaskData
    from heads.tasks import TaskConfig

    _, kind, cols, k = spec
    task = TaskConfig(name=name.replace("/", "_"), kind="multilabel" if kind == "multilabel" else "multiclass",
                      columns=tuple(cols))
    return TaskData(task, k, rows["train"][0], rows["train"][1], rows["validation"][0], rows["validation"][1])


def tune(variant: str, specs: dict, tune_rows: dict, steps: int = 150, texts_per_step: int = 32, scale: float = 1.0,
         keep_general: float = 1.0, threads: int = 2, say=print, models: Path = MODELS, bit_margin: float = 1.0):
    """One tuning run of the packaged encoder on the tuning tasks (heads.multitask, the library the train_encoder
    job runs); saves <models>/<variant> and returns (TrainedEncoder, run summary)."""
    from encoder.model import load_encoder, save_model_folder
    from heads.multitask import MultiTaskConfig, spec_features, train_shared_encoder

    binary_mode = {"plain": "off", "ste": "ste", "ste_mixed": "ste_mixed", "ste_nokeep": "ste",
                   "ste_margin": "ste_mixed"}[variant]
    keep = 0.0 if variant == "ste_nokeep" else keep_general
    margin = bit_margin if variant == "ste_margin" else 0.0
    cfg = MultiTaskConfig(max_steps=steps, eval_every=max(1, steps // 3), patience=2, texts_per_step=texts_per_step,
                          token_budget=4096, max_length=TUNE_MAX_LENGTH, binary=binary_mode, keep_general=keep,
                          bit_margin=margin,
                          val_rows=int(150 * scale), seed=0, warmup_steps=max(1, steps // 10))
    base = load_encoder("package", threads=threads)
    trunk = base.model.train()
    frozen = load_encoder("package", threads=threads).model if keep > 0 else None
    feats = spec_features("last4", base.num_layers, "mean", "mean", True)
    say(f"\ntuning '{variant}' (binary={binary_mode}, keep_general={keep}, bit_margin={margin}, "
        f"{steps} steps x {texts_per_step} texts)")
    out = train_shared_encoder(trunk, base.tokenizer, feats, [task_data(n, specs[n], tune_rows[n]) for n in TUNE], cfg, base=frozen, log=say)
    save_model_folder(models / variant, out.model, base.tokenizer,
                      {"name": f"all-MiniLM-L6-v2-study-{variant}",
                       "training": {"variant": variant, "bit_margin": margin, "steps": out.steps,
                                    "best_step": out.best_step,
                                    "best_validation_mean": round(out.best_score, 4)}})
    say(f"'{variant}': best step {out.best_step} of {out.steps}, validation mean {out.best_score:.4f}, "
        f"{out.seconds:.0f} s")
    return out, {"best_step": out.best_step, "steps": out.steps, "seconds": round(out.seconds, 1),
                 "best_validation_mean": round(out.best_score, 4), "history": out.history}


def choose_setting(feats: dict, rows: dict, specs: dict, cal: dict, say) -> dict:
    """The tuned encoder's 48-byte feature setting (layers x positions x thresholds: zero, or per-dimension medians
    of the calibration sample) chosen by the mean validation score of linear heads on the *tuning* tasks, as a user
    would choose the embed job's settings; then its test figures on the held-out and tuning tasks. Held-out tasks
    take no part in the choice."""
    table = []
    for combo in feats[HELD_OUT[0]]["train"]:
        if feats[HELD_OUT[0]]["train"][combo].shape[1] != 384:       # 48 bytes only (last4 concat is 192)
            continue
        for thr in ("zero", "median"):
            t = None if thr == "zero" else np.median(cal[combo], axis=0).astype(np.float32)
            per = {}
            for n in TUNE + HELD_OUT:
                x = {sp: binary(v[combo], t) for sp, v in feats[n].items()}
                y = {sp: rows[n][sp][1] for sp in rows[n]}
                per[n] = probe(x, y, specs[n][1] == "multilabel", with_validation=True)
            table.append({"layers": combo[0], "positions": combo[1], "thresholds": thr,
                          "tuning_validation": float(np.mean([per[n][0] for n in TUNE])),
                          "held_out_test": float(np.mean([per[n][1] for n in HELD_OUT])),
                          "per_task_test": {n: per[n][1] for n in per}})
            say(f"  setting {combo[0]} / {combo[1]} / {thr}: tuning validation {table[-1]['tuning_validation']:.2f}"
                f", held-out test {table[-1]['held_out_test']:.2f}")
    best = max(table, key=lambda r: r["tuning_validation"])
    combo = (best["layers"], best["positions"])
    fp32 = {n: probe({sp: v[combo] for sp, v in feats[n].items()}, {sp: rows[n][sp][1] for sp in rows[n]},
                     specs[n][1] == "multilabel") for n in TUNE + HELD_OUT}
    say(f"  chosen on the tuning tasks' validation: {combo[0]} / {combo[1]} / {best['thresholds']} thresholds")
    return {"setting": f"{combo[0]} / {combo[1]} / {best['thresholds']} thresholds", "table": table,
            "accuracy": {n: {"fp32": fp32[n], "binary": best["per_task_test"][n]} for n in TUNE + HELD_OUT}}


# -- study ------------------------------------------------------------------------------------------------------
def main() -> None:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="max optimiser steps per tuning run")
    ap.add_argument("--texts-per-step", type=int, default=32)
    ap.add_argument("--variants", default="plain,ste,ste_mixed",
                    help="tuning runs: plain (float heads), ste (heads on the bits), ste_mixed (both), ste_nokeep "
                         "(ste without the keep-general term), ste_margin (ste_mixed + the bit-margin term)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every row cap (2 = twice the rows)")
    ap.add_argument("--keep-general", type=float, default=1.0)
    ap.add_argument("--bit-margin", type=float, default=1.0, help="weight of the bit-margin term in ste_margin")
    ap.add_argument("--reuse", action="append", default=[], metavar="VARIANT=FOLDER",
                    help="evaluate a tuned encoder saved by an earlier run instead of tuning it (repeatable)")
    ap.add_argument("--out", default=str(OUT), help="report folder (tuned encoders go to its models/)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    OUT = Path(args.out)
    data = require_data()
    import torch

    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
from encoder.features import FeatureSettings
    from encoder.model import load_encoder

    torch.set_num_threads(args.threads)
    s = args.scale
    labels = json.loads((data / "labels.json").read_text())
    caps = {"train": int(800 * s), "validation": int(200 * s), "test": int(500 * s)}            # held-out tasks
    tune_probe_caps = {"train": int(500 * s), "validation": int(150 * s), "test": int(400 * s)}  # tuning tasks
    tune_caps = {"train": int(4000 * s), "validation": int(150 * s)}
    t_start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def say(msg: str) -> None:
        print(msg)
        log_lines.append(msg)

    # 1. tasks
    specs, tune_rows, seen = tuning_rows(data, labels, s)
    rows = {n: load_rows(data, specs[n][0], specs[n][2], caps if n in HELD_OUT else tune_probe_caps, seen,
                         ("train", "validation", "test") if n in HELD_OUT else ("test",)) for n in TUNE + HELD_OUT}
    say(f"evaluation rows dropped because the tuning saw their text: {REMOVED}")
    say(f"tasks loaded ({time.perf_counter() - t_start:.0f} s): " + ", ".join(
        f"{n} {len(rows[n]['train'][0])}/{len(rows[n]['validation'][0])}/{len(rows[n]['test'][0])}" for n in rows))
    sick = pq.read_table(data / "senteval/sick_e/test.parquet").to_pydict()
    order = sorted(range(len(sick["id"])), key=lambda i: _h(sick["id"][i]))[: int(1500 * s)]
    sick_a = [sick["text"][i] for i in order]
    sick_b = [sick["text_pair"][i] for i in order]
    sick_y = np.asarray([sick["relatedness_score"][i] for i in order])

    # 2. tuning runs
    base = load_encoder("package", threads=args.threads)
    models = {"base": base.model}
    runs = {}
    for item in args.reuse:
        variant, _, folder = item.partition("=")
        lineage = json.loads((Path(folder) / "lineage.json").read_text())
        runs[variant] = lineage.get("training", {}) | {"seconds": 0.0, "reused": folder}
        runs[variant].setdefault("best_validation_mean", float("nan"))
        runs[variant].setdefault("history", [])
        models[variant] = load_encoder(folder, threads=args.threads).model.eval()
        say(f"reusing '{variant}' from {folder}")
    for variant in [v for v in args.variants.split(",") if v and v not in runs]:
        out, runs[variant] = tune(variant, specs, tune_rows, args.steps, args.texts_per_step, s, args.keep_general,
                                  args.threads, say, OUT / "models", args.bit_margin)
        models[variant] = out.model.eval()

    # the study's features are the pipeline's: check the default combination against the one extractor
    fx = FeatureExtractor(base, EncoderConfig(features=FeatureSettings(max_length=MAX_LENGTH)))
    probe_texts = rows["senteval/mr"]["test"][0][:64]
    ours = encode(base.model, base.tokenizer, probe_texts, [DEFAULT])[DEFAULT]
    assert np.allclose(ours, fx.features(probe_texts).values, atol=1e-5), "study features differ from the pipeline's"

    # 3. encode and probe
    tuned_names = [v for v in models if v != "base"]
    # "tuned" in the bars: the variant with the best mean validation score on the tuning tasks (never a held-out task)
    pool_variant = max(tuned_names, key=lambda v: np.nan_to_num(runs[v]["best_validation_mean"], nan=-1.0)) \
        if tuned_names else "base"
    all_combos = [(lc, p) for lc in LAYER_CHOICES for p in POSITIONS]
    results: dict = {"accuracy": {}, "pooling": {}, "similarity": {}, "thresholds": {}}
    calib = [t for n in TUNE for t in rows[n]["train"][0][:100]]
    for name, model in models.items():
        t = time.perf_counter()
        feats = {}
        for n in TUNE + HELD_OUT:
            combos = all_combos if name == pool_variant else [DEFAULT]
            feats[n] = {split: encode(model, base.tokenizer, rows[n][split][0], combos) for split in rows[n]}
        a = encode(model, base.tokenizer, sick_a, [DEFAULT])[DEFAULT]
        b = encode(model, base.tokenizer, sick_b, [DEFAULT])[DEFAULT]
        cal_all = encode(model, base.tokenizer, calib, all_combos if name == pool_variant else [DEFAULT])
        cal = cal_all[DEFAULT]
        say(f"\nencoded everything with '{name}' in {time.perf_counter() - t:.0f} s")
        from scipy.stats import spearmanr

        ba, bb = binary(a), binary(b)
        results["similarity"][name] = {
            "fp32_cosine": float(spearmanr((a * b).sum(1), sick_y)[0]),
            "binary_hamming": float(spearmanr(-(ba != bb).sum(1), sick_y)[0])}
        say(f"  sick relatedness Spearman: cosine {results['similarity'][name]['fp32_cosine']:.3f}, "
            f"hamming {results['similarity'][name]['binary_hamming']:.3f}")
        acc = {}
        med = np.median(cal, axis=0).astype(np.float32)
        rot = itq(cal)
        for n in TUNE + HELD_OUT:
            ml = specs[n][1] == "multilabel"
            y = {sp: rows[n][sp][1] for sp in rows[n]}
            x = {sp: feats[n][sp][DEFAULT] for sp in feats[n]}
            acc[n] = {"fp32": probe(x, y, ml), "binary": probe({k: binary(v) for k, v in x.items()}, y, ml)}
            if n in HELD_OUT:
                results["thresholds"].setdefault(name, {})[n] = {
                    "zero": acc[n]["binary"],
                    "median": probe({k: binary(v, med) for k, v in x.items()}, y, ml),
                    "itq": probe({k: binary(v, rotation=rot) for k, v in x.items()}, y, ml)}
            say(f"  {n:28s} fp32 {acc[n]['fp32']:5.1f}  binary {acc[n]['binary']:5.1f}")
        results["accuracy"][name] = acc
        if name == pool_variant:
            for combo in all_combos:
                per = {}
                for n in HELD_OUT:
                    x = {sp: feats[n][sp][combo] for sp in feats[n]}
                    y = {sp: rows[n][sp][1] for sp in rows[n]}
                    per[n] = {"fp32": probe(x, y, False), "binary": probe({k: binary(v) for k, v in x.items()}, y,
                                                                            False)}
                dim = next(iter(feats[HELD_OUT[0]].values()))[combo].shape[1]
                results["pooling"][f"{combo[0]} / {combo[1]}"] = {
                    "fp32": float(np.mean([v["fp32"] for v in per.values()])),
                    "binary": float(np.mean([v["binary"] for v in per.values()])),
                    "fp32_bytes": dim * 4, "binary_bytes": dim // 8}
            results["chosen"] = choose_setting(feats, rows, specs, cal_all, say)
        del feats
    results["runs"] = runs
    results["pool_variant"] = pool_variant
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["removed_seen_texts"] = REMOVED
    results["settings"] = vars(args) | {"caps": caps, "tune_probe_caps": tune_probe_caps, "tune_caps": tune_caps, "max_length": MAX_LENGTH,
                                        "tune_max_length": TUNE_MAX_LENGTH,
                                        "sick_pairs": len(sick_y), "c_grid": C_GRID}
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report(results, tuned_names, say)


def study_bars(results: dict, tuned: dict) -> list[tuple[str, bool]]:
    """The issue's four accuracy bars for one tuned representation ({task: {fp32, binary}}) against the base's
    default setting."""
    base = results["accuracy"]["base"]
    h_base32, h_base1 = avg(base, "fp32", HELD_OUT), avg(base, "binary", HELD_OUT)
    h_t32, h_t1 = avg(tuned, "fp32", HELD_OUT), avg(tuned, "binary", HELD_OUT)
    t_base32, t_t1 = avg(base, "fp32", TUNE), avg(tuned, "binary", TUNE)
    worst = min(HELD_OUT, key=lambda n: tuned[n]["binary"] - base[n]["binary"])
    worst_d = tuned[worst]["binary"] - base[worst]["binary"]
    return [
        (f"held-out avg: tuned binary (48 B) {h_t1:.2f} >= base fp32 (1,536 B) {h_base32:.2f}", h_t1 >= h_base32),
        (f"held-out avg: tuned fp32 - tuned binary = {h_t32 - h_t1:.2f} <= 1.0 (base: {h_base32 - h_base1:.2f})",
         h_t32 - h_t1 <= 1.0),
        (f"no held-out task > 2 points below base binary: worst {worst} {worst_d:+.2f}", worst_d >= -2.0),
        (f"tuning tasks' test avg: tuned binary {t_t1:.2f} >= base fp32 + 3 = {t_base32 + 3:.2f}",
         t_t1 >= t_base32 + 3)]


def avg(acc: dict, kind: str, tasks: list[str]) -> float:
    """Mean of one kind (fp32 | binary) over tasks, from {task: {kind: accuracy}}."""
    return float(np.mean([acc[n][kind] for n in tasks]))


def mean(results: dict, model: str, kind: str, tasks: list[str]) -> float:
    return avg(results["accuracy"][model], kind, tasks)


def report(results: dict, tuned: list[str], say) -> None:
    """Bars, tables and charts from results.json (also usable alone: python -c 'from transfer import ...')."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main_v = results["pool_variant"]
    sim_b, sim_t = results["similarity"]["base"]["fp32_cosine"], results["similarity"][main_v]["fp32_cosine"]
    bars = study_bars(results, results["accuracy"][main_v]) + [
        (f"similarity (sick relatedness Spearman): tuned {sim_t:.3f} >= base - 0.03 = {sim_b - 0.03:.3f}",
         sim_t >= sim_b - 0.03)]
    say(f"\nBars (tuned = '{main_v}', the default setting last4 mean / mean / zero thresholds):")
    for text, ok in bars:
        say(f"  [{'met' if ok else 'NOT met'}] {text}")
    chosen = results.get("chosen")
    chosen_bars = study_bars(results, chosen["accuracy"]) if chosen else []
    if chosen:
        say(f"Bars (tuned = '{main_v}' with its 48-byte setting chosen on the tuning tasks' validation: "
            f"{chosen['setting']}):")
        for text, ok in chosen_bars:
            say(f"  [{'met' if ok else 'NOT met'}] {text}")

    models = ["base", *tuned]
    lines = ["# Transfer study: the multi-task tuned shared encoder on tasks it never saw", "",
             f"`python bench/transfer.py` ({results['seconds'] / 60:.0f} minutes on 2 CPU cores; settings: "
             f"`{json.dumps(results['settings'], default=str)}`). Tuned = variant `{main_v}` (the best mean "
             "validation score on the tuning tasks) unless a column says otherwise. Linear heads on frozen features (logistic regression, C chosen on validation), test "
             "accuracy in % (goemotions: micro-F1). Evaluation rows whose text (lower-cased, spaces collapsed) the "
             f"tuning saw were dropped first: {results['removed_seen_texts']} (held-out tasks: every split; tuning "
             "tasks: test). Near-duplicates and shared authors (blog gender/age_group) are not removed.", "",
             "## Bars", ""]
    lines += [f"- **{'met' if ok else 'NOT met'}**: {text}" for text, ok in bars]
    if chosen:
        lines += ["", f"With the tuned encoder's 48-byte setting chosen on the tuning tasks' validation "
                      f"(**{chosen['setting']}**; held-out tasks take no part in the choice):", ""]
        lines += [f"- **{'met' if ok else 'NOT met'}**: {text}" for text, ok in chosen_bars]
        lines += ["", "| layers / positions / thresholds | tuning tasks' validation (chooses) | held-out test |",
                  "|---|---|---|"]
        lines += [f"| {r['layers']} / {r['positions']} / {r['thresholds']} | {r['tuning_validation']:.2f} | "
                  f"{r['held_out_test']:.2f} |" for r in chosen["table"]]
    lines += ["", "## Tuning runs", "", "| variant | best step | steps | validation mean | seconds |", "|---|---|---|---|---|"]
    for v, r in results["runs"].items():
        lines.append(f"| {v} | {r['best_step']} | {r['steps']} | {r['best_validation_mean']:.4f} | {r['seconds']} |")
    for group, tasks in (("Held-out tasks", HELD_OUT), ("Tuning tasks (test splits)", TUNE)):
        lines += ["", f"## {group}", "", "| task | " + " | ".join(f"{m} fp32 | {m} binary" for m in models) + " |",
                  "|---|" + "---|---|" * len(models)]
        for n in tasks:
            lines.append(f"| {n} | " + " | ".join(f"{results['accuracy'][m][n]['fp32']:.1f} | "
                                                   f"{results['accuracy'][m][n]['binary']:.1f}" for m in models) + " |")
        lines.append("| **average** | " + " | ".join(f"**{mean(results, m, 'fp32', tasks):.2f}** | "
                                                    f"**{mean(results, m, 'binary', tasks):.2f}**" for m in models)
                     + " |")
    lines += ["", "## Similarity (senteval/sick_e relatedness, Spearman)", "", "| encoder | cosine (fp32) | "
              "-Hamming (binary) |", "|---|---|---|"]
    lines += [f"| {m} | {v['fp32_cosine']:.3f} | {v['binary_hamming']:.3f} |" for m, v in results["similarity"].items()]
    lines += ["", f"## Pooling on the held-out tasks (encoder `{main_v}`)", "",
              "| layers / positions | fp32 | bytes | binary | bytes |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['fp32']:.2f} | {v['fp32_bytes']:,} | {v['binary']:.2f} | {v['binary_bytes']} |"
              for k, v in results["pooling"].items()]
    lines += ["", "## Thresholds for the bits (held-out average)", "", "| encoder | zero | median | ITQ rotation |",
              "|---|---|---|---|"]
    for m, per in results["thresholds"].items():
        lines.append(f"| {m} | " + " | ".join(f"{np.mean([v[k] for v in per.values()]):.2f}"
                                              for k in ("zero", "median", "itq")) + " |")
    lines += ["", "![accuracy vs bytes](accuracy_vs_bytes.png)", "", "![held-out tasks](held_out_tasks.png)", "",
              "![tuning tasks](tuning_tasks.png)", ""]
    (OUT / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in models:
        for kind, b in (("fp32", 1536), ("binary", 48)):
            ax.scatter(b, mean(results, m, kind, HELD_OUT), s=60, marker="o" if m == "base" else "s")
            ax.annotate(f"{m} {kind}", (b, mean(results, m, kind, HELD_OUT)), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
    for k, v in results["pooling"].items():
        if k != "last4 mean / mean":
            for kind in ("fp32", "binary"):
                ax.scatter(v[f"{kind}_bytes"], v[kind], s=12, c="grey", alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per text (log)")
    ax.set_ylabel("held-out average test accuracy (%)")
    ax.set_title("Accuracy vs bytes per text (grey: other poolings of the tuned encoder)")
    fig.tight_layout()
    fig.savefig(OUT / "accuracy_vs_bytes.png", dpi=120)
    plt.close(fig)
    for fname, tasks, title in (("held_out_tasks.png", HELD_OUT, "Held-out tasks"),
                                ("tuning_tasks.png", TUNE, "Tuning tasks (test)")):
        fig, ax = plt.subplots(figsize=(11, 4.5))
        x = np.arange(len(tasks))
        series = [("base", "fp32"), ("base", "binary"), (main_v, "fp32"), (main_v, "binary")]
        w = 0.8 / len(series)
        for i, (m, kind) in enumerate(series):
            ax.bar(x + i * w, [results["accuracy"][m][n][kind] for n in tasks], w, label=f"{m} {kind}")
        ax.set_xticks(x + 0.4 - w / 2)
        ax.set_xticklabels([n.split("/")[-1] for n in tasks], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{title}: base vs tuned ('{main_v}'), fp32 and binary")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(OUT / fname, dpi=120)
        plt.close(fig)
    say(f"\nwrote {OUT / 'report.md'} and charts")


if __name__ == "__main__":
    main()
