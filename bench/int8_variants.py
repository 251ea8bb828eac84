"""Which int8 graph ``encoder.backend: onnx_int8`` builds: every variant of encoder/backends.py's INT8_VARIANTS
against torch fp32 and the fp32 ONNX graph, in one run.

    python bench/int8_variants.py [--quick] [--repeats 3]      # ~15 minutes on 2 cores; needs ../shared/data

(1) Speed: texts/s of each graph on bench/encode.py's 2,400 mixed real texts (default spec, max_length 256, 2
    threads, the pipeline's batching), interleaved with torch (bench/timing.py), and the share of sign bits and the
    mean cosine each keeps of torch's features.
(2) Choice, on validation only: linear heads (bench/study.py's probe) on the 10 tuning tasks of the transfer study,
    C chosen on their validation rows; a variant's score is its mean validation accuracy on the binary codes minus
    torch's. Rule: among the variants at >= 1.6x torch's texts/s, the smallest validation loss; within 0.05 points,
    the faster. The held-out tasks take no part in it.
(3) Report: the 12 held-out tasks' test accuracy (fp32 features and binary codes) of every variant, beside torch's.
Writes out/int8/results.json, out/int8/report.md and out/int8/int8_variants.png (docs/backends.md holds the table).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT, require_data  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from study import HELD_OUT, QUICK, TUNE, StudyCaps, backend_accuracy, load_study  # noqa: E402
from timing import compare  # noqa: E402

OUT = ROOT / "out" / "int8"
SPEED_BAR = 1.6
TIE = 0.05


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny caps: a smoke run of the whole path")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    data = require_data()
    torch.set_num_threads(args.threads)
    from encode import load_texts
    from encoder.backends import INT8_VARIANTS, ONNX_INT8
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
    from encoder.features import FeatureSettings
    from encoder.model import load_encoder
    from encoder.onnx_graph import runner_for

    caps = QUICK if args.quick else StudyCaps()
    loaded = load_encoder("package", threads=args.threads)
    cache = str(OUT / "graphs")

    def extractors(settings: FeatureSettings) -> dict[str, FeatureExtractor]:
        """torch, the fp32 graph and every int8 variant under the same settings and batching."""
        def fx(backend: str, variant: str | None = None) -> FeatureExtractor:
            s = dataclasses.replace(settings, backend=backend)
            runner = None if backend == "torch" else runner_for(loaded, s.resolve(loaded.num_layers), args.threads,
                                                                cache, variant)
            return FeatureExtractor(loaded, EncoderConfig(features=s), runner=runner)

        return {"torch": fx("torch"), "onnx": fx("onnx")} | {f"int8 {v}": fx("onnx_int8", v) for v in INT8_VARIANTS}

    t0 = time.perf_counter()
    # (1) speed and bits on the mixed texts at the default spec
    _, texts = load_texts(80 if args.quick else 400)
    fxs = extractors(FeatureSettings())
    timing = compare({k: (lambda f=f: f.features(texts).values) for k, f in fxs.items()}, args.repeats,
                     warmup={k: (lambda f=f: f.features(texts[:128])) for k, f in fxs.items()})
    ref = timing.results["torch"]
    results: dict = {"texts": len(texts), "threads": args.threads, "variants": {}}
    for k in fxs:
        x = timing.results[k]
        cos = (x * ref).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(ref, axis=1)
        results["variants"][k] = {"texts_per_s": timing.rate(k, len(texts)), "speedup": timing.speedup(k, "torch"),
                                  "sign_agreement": float(((x > 0) == (ref > 0)).mean()),
                                  "mean_cosine": float(cos.mean()),
                                  "recipe": INT8_VARIANTS[k[5:]].describe() if k.startswith("int8 ") else k}
        print(f"(1) {k:34s} {results['variants'][k]['texts_per_s']:6.0f} texts/s  {timing.speedup(k, 'torch'):.2f}x "
              f"torch  sign bits agreeing {results['variants'][k]['sign_agreement']:.4%}  mean cosine "
              f"{results['variants'][k]['mean_cosine']:.4f}")
    del timing, ref

    # (2) + (3) accuracy at the studies' evaluation length
    study = load_study(data, caps, TUNE + HELD_OUT, sick=False)
    fxs = extractors(FeatureSettings(max_length=caps.max_length))
    for k, f in fxs.items():
        t = time.perf_counter()
        acc = backend_accuracy(lambda texts, f=f: f.features(texts).values, study, caps, TUNE + HELD_OUT)
        v = results["variants"][k]
        for kind in ("fp32", "binary"):
            v[f"validation_{kind}"] = float(np.mean([acc[n][kind][0] for n in TUNE]))
            v[f"held_out_{kind}"] = float(np.mean([acc[n][kind][1] for n in HELD_OUT]))
        v["per_task"] = {n: {kind: acc[n][kind] for kind in ("fp32", "binary")} for n in TUNE + HELD_OUT}
        print(f"    {k:34s} tuning tasks' validation: fp32 {v['validation_fp32']:.2f} binary "
              f"{v['validation_binary']:.2f}; held-out test: fp32 {v['held_out_fp32']:.2f} binary "
              f"{v['held_out_binary']:.2f} ({time.perf_counter() - t:.0f} s)")
    base = results["variants"]["torch"]
    for v in results["variants"].values():
        for kind in ("validation_fp32", "validation_binary", "held_out_fp32", "held_out_binary"):
            v[f"{kind}_loss"] = base[kind] - v[kind]

    eligible = [k for k, v in results["variants"].items() if k.startswith("int8 ") and v["speedup"] >= SPEED_BAR]
    chosen = None
    if eligible:
        best = min(results["variants"][k]["validation_binary_loss"] for k in eligible)
        near = [k for k in eligible if results["variants"][k]["validation_binary_loss"] <= best + TIE]
        chosen = max(near, key=lambda k: results["variants"][k]["speedup"])[5:]
    results |= {"chosen": chosen, "shipped": ONNX_INT8, "caps": caps.to_json(), "seconds": time.perf_counter() - t0,
                "command": " ".join(["python bench/int8_variants.py", *sys.argv[1:]])}
    print(f"(2) chosen on the tuning tasks' validation splits: {chosen} (>= {SPEED_BAR}x torch, smallest binary "
          f"validation loss, ties within {TIE} to the faster); encoder/backends.py ships {ONNX_INT8!r}"
          + ("" if chosen == ONNX_INT8 else "  << DIFFERENT: update ONNX_INT8"))
    if chosen:
        c = results["variants"][f"int8 {chosen}"]
        ok = c["speedup"] >= SPEED_BAR and c["held_out_binary_loss"] <= 0.3
        print(f"(3) bar onnx_int8: {c['speedup']:.2f}x torch (>= {SPEED_BAR}x) and {c['held_out_binary_loss']:+.2f} "
              f"points below torch on the held-out tasks' binary codes (<= 0.3; fp32 features "
              f"{c['held_out_fp32_loss']:+.2f}): {'met' if ok else 'NOT met'}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report(results)


def report(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [f"# int8 variants ({results['command']})", "",
             f"{results['texts']} mixed texts for speed, {results['threads']} threads; accuracy: linear heads, C on "
             "validation. Loss = torch minus the variant, in points (positive: worse).", "",
             "| graph | texts/s | x torch | sign bits agreeing | mean cosine | validation loss fp32 / binary (10 "
             "tuning tasks) | held-out test loss fp32 / binary (12 tasks) |", "|---|---|---|---|---|---|---|"]
    for k, v in results["variants"].items():
        lines.append(f"| {k} | {v['texts_per_s']:.0f} | {v['speedup']:.2f} | {v['sign_agreement']:.2%} | "
                     f"{v['mean_cosine']:.4f} | {v['validation_fp32_loss']:+.2f} / {v['validation_binary_loss']:+.2f}"
                     f" | {v['held_out_fp32_loss']:+.2f} / {v['held_out_binary_loss']:+.2f} |")
    t = results["variants"]["torch"]
    lines += ["", f"torch: validation fp32 {t['validation_fp32']:.2f} / binary {t['validation_binary']:.2f}; held-out "
              f"test fp32 {t['held_out_fp32']:.2f} / binary {t['held_out_binary']:.2f}.",
              f"Chosen on validation: **{results['chosen']}**; shipped as onnx_int8: **{results['shipped']}**."]
    (OUT / "report.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for k, v in results["variants"].items():
        ax.scatter(v["speedup"], v["held_out_binary_loss"], s=40)
        ax.annotate(k, (v["speedup"], v["held_out_binary_loss"]), fontsize=8, xytext=(4, 3),
                    textcoords="offset points")
    ax.axhline(0.3, color="grey", ls="--", lw=0.8)
    ax.axvline(SPEED_BAR, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("texts/s vs torch fp32 (2 cores)")
    ax.set_ylabel("held-out accuracy lost, binary codes (points)")
    ax.set_title("Encoder backends: speed against accuracy lost")
    fig.tight_layout()
    fig.savefig(OUT / "int8_variants.png", dpi=120)
    print(f"wrote {OUT / 'report.md'} and int8_variants.png")


if __name__ == "__main__":
    main()
