"""Shared encoder or one model per task: the measured per-text costs the planner (``python -m jobs.plan``) uses, and
a check of the planner against a measured run of the embed + apply jobs.

    python bench/crossover.py --costs-only [--write]       # ~5 minutes on 2 cores; --write updates docs/costs.json

(1) Seconds per text of an encoder pass through the pipeline's own extractor (tokenize, length-bucketed batches,
    pooling) at 16, 32, 64 and 128 tokens, for the shared encoder (the packaged all-MiniLM-L6-v2, 6 layers; a per-task
    teacher has the same architecture) and for a per-task student: its first 2 layers (a third of the encoder's
    FLOPs; the paper's students are distilled to a fraction of the teacher's depth). Fitted as a + b·t + c·t².
(2) Seconds per text of one head on stored 48-byte codes (fused scoring of 20 binary linear heads on 200,000 codes).
(3) Fixed seconds per job run (Spark session, model load, publication): the embed and apply jobs on a 20-row input.
(4) The planner's prediction for the shipped 5,000-text sample (its mean token count, 2 heads) against a measured
    embed + apply run on it (bar: within 25%).
Writes out/crossover/costs.json (and docs/costs.json with --write). The accuracy comparison (per-task teachers and
students against the shared encoder) is not part of this script yet.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

OUT = ROOT / "out" / "crossover"
LENGTHS = (16, 32, 64, 128)
STUDENT_LAYERS = 2
SAMPLE = ROOT / "examples" / "goemotions_sample.parquet"


def student_of(loaded, layers: int):
    """The base with only its first ``layers`` transformer layers (what a per-task student is built from)."""
    from encoder.model import LoadedEncoder

    m = copy.deepcopy(loaded.model)
    m.encoder.layer = m.encoder.layer[:layers]
    m.config.num_hidden_layers = layers
    return LoadedEncoder(loaded.tokenizer, m.eval(), "cpu", {"name": f"first{layers}", "sha256": "-"}, layers,
                         loaded.hidden_size)


def seconds_per_text(loaded, layers: str, token_ids: list[list[int]], repeats: int = 3) -> dict[int, float]:
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig

    fx = FeatureExtractor(loaded, EncoderConfig(layers=layers))
    out = {}
    for t in LENGTHS:
        rows = [ids[:t - 1] + [ids[-1]] for ids in token_ids if len(ids) >= t][:max(200, 12_000 // t)]
        if len(rows) < 50:
            raise SystemExit(f"not enough texts of {t} tokens to time")
        fx.encode_ids(rows[:20], 20)                                  # warm-up
        ts = []
        for _ in range(repeats):
            s = time.perf_counter()
            fx.encode_ids(rows, len(rows))
            ts.append((time.perf_counter() - s) / len(rows))
        out[t] = float(np.median(ts))
    return out


def fit(per_length: dict[int, float]) -> list[float]:
    t = np.array(list(per_length), np.float64)
    y = np.array(list(per_length.values()))
    a = np.stack([np.ones_like(t), t, t * t], axis=1)
    return [float(v) for v in np.linalg.lstsq(a, y, rcond=None)[0]]


def head_seconds() -> float:
    from encoder.spec import FeatureSpec
    from heads.fitted import FittedHead
    from heads.modules import Head
    from heads.score import FusedScorer
    from heads.tasks import TaskConfig

    spec = FeatureSpec(model={"name": "x", "sha256": "0"}, layers=(3, 4, 5, 6), layer_combine="mean", pooling="mean",
                       normalize=True, max_length=256, dim=384, quantization="binary", threshold_mode="zero")
    torch.manual_seed(0)
    heads = [FittedHead(TaskConfig(f"b{i}", "binary", (f"c{i}",)), Head(384, 1).eval(), ["0", "1"])
             for i in range(20)]
    codes = np.random.default_rng(0).integers(0, 256, (200_000, 48), dtype=np.uint8)
    scorer = FusedScorer(heads, spec)
    scorer.logits(codes[:1000])
    ts = []
    for _ in range(3):
        s = time.perf_counter()
        scorer.logits(codes)
        ts.append(time.perf_counter() - s)
    return float(np.median(ts)) / len(codes) / len(heads)


def run_jobs(tmp: Path, src: Path) -> dict[str, float]:
    """embed -> train_heads -> apply on ``src``; wall seconds of the embed and apply commands."""
    py = sys.executable
    out = {}
    cmds = {"embed": [py, "-m", "jobs.embed", "--set", f"input.path={src}", "--set", f"output.path={tmp / 'emb'}",
                      "--set", "output.mode=full"],
            "train": [py, "-m", "jobs.train_heads", "--set", f"embeddings={tmp / 'emb'}", "--set",
                      f"output.path={tmp / 'heads'}", "--set", f"labels.path={src}"],
            "apply": [py, "-m", "jobs.apply_heads", "--set", f"embeddings={tmp / 'emb'}", "--set",
                      f"heads={tmp / 'heads'}", "--set", f"output.path={tmp / 'pred'}", "--set", "mode=full"]}
    for k, cmd in cmds.items():
        s = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        out[k] = time.perf_counter() - s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--costs-only", action="store_true", help="measure the planner's costs (the only part so far)")
    ap.add_argument("--write", action="store_true", help="also write docs/costs.json (the planner's default)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not args.costs_only:
        raise SystemExit("only --costs-only exists so far (the accuracy comparison is issue 8's next part)")
    from encoder.flops import Architecture
    from encoder.model import load_encoder
    from heads.costs import CostModel, plan

    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    base = load_encoder("package", threads=args.threads)
    texts = pq.read_table(ROOT.parent / "shared/data/tweeteval/emoji/train.parquet", columns=["text"]) \
        .column("text").to_pylist()[:4000] if (ROOT.parent / "shared/data").is_dir() else []
    if not texts:                     # without the shared data: the shipped sample, repeated into long texts
        sample = pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist()
        texts = [" ".join(sample[i:i + 8]) for i in range(0, len(sample), 2)]
    ids = base.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    long_ids = [sum((x[1:-1] for x in ids[i:i + 10]), [ids[i][0]]) + [ids[i][-1]] for i in range(0, len(ids), 3)]
    shared = seconds_per_text(base, "last4", long_ids)
    student = seconds_per_text(student_of(base, STUDENT_LAYERS), "last", long_ids)
    print("seconds per text by tokens:")
    for t in LENGTHS:
        print(f"  {t:4d} tokens: shared {shared[t] * 1e3:7.3f} ms, student {student[t] * 1e3:7.3f} ms "
              f"(ratio {student[t] / shared[t]:.2f})")
    h = head_seconds()
    print(f"one head on a stored code: {h * 1e9:.1f} ns per text")
    with tempfile.TemporaryDirectory(dir=ROOT / "out") as tmp:
        tmp = Path(tmp)
        tiny = tmp / "tiny.parquet"
        pq.write_table(pq.read_table(SAMPLE).slice(0, 20), tiny)
        fixed = run_jobs(tmp / "fixed", tiny)
        print(f"fixed seconds per run (20 rows): embed {fixed['embed']:.1f}, apply {fixed['apply']:.1f}")
        arch = Architecture.of(base.model.config)
        costs = {"format_version": 1, "dim": 384,
                 "measured": {"command": "python bench/crossover.py --costs-only --write", "date": str(date.today()),
                              "machine": f"{platform.machine()}, {args.threads} CPU threads, torch "
                                         f"{torch.__version__}"},
                 "architectures": {"shared": vars(arch), "teacher": vars(arch),
                                   "student": vars(Architecture.of(base.model.config, STUDENT_LAYERS))},
                 "devices": {"cpu": {"seconds_per_text": {"shared": fit(shared), "teacher": fit(shared),
                                                          "student": fit(student)},
                                     "head_seconds_per_text": h,
                                     "fixed_seconds": {"embed": round(fixed["embed"], 2),
                                                       "apply": round(fixed["apply"], 2)}}},
                 "per_length_seconds": {"shared": shared, "student": student}}
        (OUT / "costs.json").write_text(json.dumps(costs, indent=2) + "\n")
        # (4) the planner against a measured run on the shipped sample
        model = CostModel.load(OUT / "costs.json")
        sample_texts = pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist()
        n_tok = [min(len(x), 256) for x in base.tokenizer(sample_texts, add_special_tokens=True)["input_ids"]]
        p = plan(model, "cpu", 2, len(sample_texts), float(np.mean(n_tok)))
        measured = run_jobs(tmp / "sample", SAMPLE)
        got = measured["embed"] + measured["apply"]
        ratio = p.seconds["shared"] / got
        print(f"\nplanner vs measured, shipped sample ({len(sample_texts):,} texts, {np.mean(n_tok):.1f} tokens, 2 heads): "
              f"predicted {p.seconds['shared']:.1f} s, measured embed {measured['embed']:.1f} s + apply "
              f"{measured['apply']:.1f} s = {got:.1f} s: ratio {ratio:.2f} (bar: within 25%, "
              f"{'met' if abs(ratio - 1) <= 0.25 else 'NOT met'})")
        costs["planner_check"] = {"texts": len(sample_texts), "mean_tokens": float(np.mean(n_tok)),
                                  "predicted_seconds": p.seconds["shared"], "measured_seconds": got,
                                  "embed_seconds": measured["embed"], "apply_seconds": measured["apply"],
                                  "ratio": ratio}
    (OUT / "costs.json").write_text(json.dumps(costs, indent=2) + "\n")
    if args.write:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "costs.json").write_text(json.dumps(costs, indent=2) + "\n")
    print(f"wrote {OUT / 'costs.json'}" + (" and docs/costs.json" if args.write else ""))


if __name__ == "__main__":
    main()
