"""The per-text costs the planner (``python -m jobs.plan``) reads, measured on this machine.

    python bench/costs.py [--write]      # ~10 minutes on 2 cores; --write also updates docs/costs.json (the default)
    python bench/costs.py --quick        # every step on small inputs, ~2 minutes (never written to docs/)

(1) Seconds per text of an encoder pass through the pipeline's own extractor (tokenize, length-bucketed batches,
    pooling) at 16, 32, 64 and 128 tokens, for the shared encoder (the packaged all-MiniLM-L6-v2, 6 layers; a per-task
    teacher has the same architecture) and for a per-task student: the teacher's first 2 layers (a third of its
    FLOPs, as DistilBERT-style students keep a fraction of the teacher's depth), each on every encoder backend
    (``encoder.backend``: torch, onnx, onnx_int8). All six take turns within each repeat (bench/timing.py), so the
    backends' ratios to torch come from one run; medians, fitted as a + b·t + c·t² per path and backend. The ONNX
    graphs are built into a temporary graph cache of this run only (the student's placeholder fingerprint must never
    find another model's graph).
(2) Seconds per text of one head on stored 48-byte codes (fused scoring of 20 binary linear heads on 200,000 codes).
(3) Fixed seconds per job run (Spark session, model load, publication): the embed and apply jobs on a 20-row input.
(4) The planner's prediction for the shipped 5,000-text sample (its mean token count, 2 heads) against a measured
    embed + apply run on it (bar: within 25%).
(5) Per backend: the shared encoder pass's seconds per 1M texts at the sample's mean length, and its ratio to torch.
Writes out/crossover/costs.json (bench/crossover.py reads it with --costs) in the format planning/costs.py's
``CostModel.from_dict`` reads (torch's coefficients in ``devices.cpu.seconds_per_text`` as before, the other backends'
in ``devices.cpu.backends.<backend>``); ``--write`` copies it to docs/costs.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import DATA, ROOT  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from encoder.backends import BACKENDS, backend_recipe  # noqa: E402

from study import STUDENT_LAYERS  # noqa: E402
from timing import compare, once  # noqa: E402

OUT = ROOT / "out" / "crossover"
DOCS = ROOT / "docs" / "costs.json"
LENGTHS = (16, 32, 64, 128)
SAMPLE = ROOT / "examples" / "goemotions_sample.parquet"


def student_of(loaded, layers: int):
    """The base with only its first ``layers`` transformer layers (what a per-task student is built from)."""
    from encoder.model import LoadedEncoder
    from tuning.distill import first_layers

    return LoadedEncoder(loaded.tokenizer, first_layers(loaded.model, layers).eval(), "cpu",
                         {"name": f"first{layers}", "sha256": "-"}, layers, loaded.hidden_size)


def seconds_per_text(encoders: dict[str, tuple], token_ids: list[list[int]], backends: tuple[str, ...],
                     graph_cache: str, repeats: int = 5, tokens: int = 16_000,
                     min_texts: int = 300) -> dict[str, dict[str, dict[int, float]]]:
    """{name: (LoadedEncoder, layers)} -> {backend: {name: {tokens: median seconds per text}}}, every encoder on every
    backend interleaved in one ``compare`` per length; at each length ``tokens`` tokens of text, at least
    ``min_texts`` texts. Each backend's features are checked against torch's first (a broken graph is not timed)."""
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
    from encoder.features import FeatureSettings

    fxs = {(b, k): FeatureExtractor(m, EncoderConfig(features=FeatureSettings(layers=layers, backend=b),
                                                     graph_cache=graph_cache))
           for b in backends for k, (m, layers) in encoders.items()}
    probe = [ids[:31] + [ids[-1]] for ids in token_ids[:32]]
    for (b, k), fx in fxs.items():
        if b != "torch":
            ref, got = fxs["torch", k].encode_ids(probe, len(probe)), fx.encode_ids(probe, len(probe))
            cos = float(np.min(np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))))
            if cos < 0.9:
                raise SystemExit(f"{k} on {b}: features disagree with torch's (min cosine {cos:.3f}); not timed")
    name = {key: f"{key[1]}/{key[0]}" for key in fxs}
    out: dict[str, dict[str, dict[int, float]]] = {b: {k: {} for k in encoders} for b in backends}
    for t in LENGTHS:
        rows = [ids[:t - 1] + [ids[-1]] for ids in token_ids if len(ids) >= t][:max(min_texts, tokens // t)]
        if len(rows) < 50:
            raise SystemExit(f"not enough texts of {t} tokens to time")
        timed = compare({name[key]: (lambda fx=fx: fx.encode_ids(rows, len(rows))) for key, fx in fxs.items()},
                        repeats, warmup={name[key]: (lambda fx=fx: fx.encode_ids(rows[:20], 20))
                                         for key, fx in fxs.items()})
        for key in fxs:
            out[key[0]][key[1]][t] = timed.per_item(name[key], len(rows))
    return out


def fit(per_length: dict[int, float]) -> list[float]:
    t = np.array(list(per_length), np.float64)
    y = np.array(list(per_length.values()))
    a = np.stack([np.ones_like(t), t, t * t], axis=1)
    return [float(v) for v in np.linalg.lstsq(a, y, rcond=None)[0]]


def head_seconds(rows: int, repeats: int) -> float:
    """Median seconds of one binary head on one stored code: fused scoring of 20 heads on ``rows`` codes."""
    from encoder.spec import FeatureSpec
    from heads.fitted import FittedHead
    from heads.modules import Head
    from heads.score import FusedScorer
    from heads.tasks import TaskConfig

    spec = FeatureSpec.of(model={"name": "x", "sha256": "0"}, layers=(3, 4, 5, 6), layer_combine="mean",
                          pooling="mean", normalize=True, max_length=256, dim=384, quantization="binary",
                          threshold_mode="zero")
    torch.manual_seed(0)
    heads = [FittedHead(TaskConfig(f"b{i}", "binary", (f"c{i}",)), Head(384, 1).eval(), ["0", "1"])
             for i in range(20)]
    codes = np.random.default_rng(0).integers(0, 256, (rows, 48), dtype=np.uint8)
    scorer = FusedScorer(heads, spec)
    timed = compare({"fused": lambda: scorer.logits(codes)}, repeats,
                    warmup={"fused": lambda: scorer.logits(codes[:1000])})
    return timed.per_item("fused", len(codes) * len(heads))


def run_jobs(tmp: Path, src: Path, heads: Path | None = None) -> dict[str, float]:
    """embed [-> train_heads] -> apply on ``src`` (with ``heads`` when given); wall seconds of each command, each run
    once and cold, as a nightly schedule starts them."""
    py = sys.executable
    heads = heads or tmp / "heads"
    cmds = {"embed": [py, "-m", "jobs.embed", "--set", f"input.path={src}", "--set", f"output.path={tmp / 'emb'}",
                      "--set", "output.mode=full"],
            "train": [py, "-m", "jobs.train_heads", "--set", f"embeddings={tmp / 'emb'}", "--set",
                      f"output.path={heads}", "--set", f"labels.path={src}"],
            "apply": [py, "-m", "jobs.apply_heads", "--set", f"embeddings={tmp / 'emb'}", "--set",
                      f"heads={heads}", "--set", f"output.path={tmp / 'pred'}", "--set", "mode=full"]}
    if heads.exists():
        del cmds["train"]
    out = {}
    for k, cmd in cmds.items():
        out[k], r = once(lambda cmd=cmd: subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True))
        if r.returncode:
            raise SystemExit(f"{' '.join(cmd[1:3])} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return out


def measure_costs(threads: int, say, quick: bool = False, command: str = "python bench/costs.py --write") -> dict:
    """(1)-(4): the per-text costs the planner reads, and the planner's check against a measured job run."""
    from encoder.encode import tokenize
    from encoder.model import load_encoder
    from planning.costs import CostModel, plan
    from planning.flops import Architecture

    base = load_encoder("package", threads=threads)
    texts = pq.read_table(DATA / "tweeteval/emoji/train.parquet", columns=["text"]) \
        .column("text").to_pylist()[:4000] if DATA.is_dir() else []
    if not texts:                     # without the shared data: the shipped sample, repeated into long texts
        sample = pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist()
        texts = [" ".join(sample[i:i + 8]) for i in range(0, len(sample), 2)]
    ids = tokenize(base.tokenizer, texts, 1 << 30)[0]
    long_ids = [sum((x[1:-1] for x in ids[i:i + 10]), [ids[i][0]]) + [ids[i][-1]] for i in range(0, len(ids), 3)]
    with tempfile.TemporaryDirectory(prefix="costs-graphs-") as graphs:   # this run's graphs only (see (1))
        by_backend = seconds_per_text({"shared": (base, "last4"),
                                       "student": (student_of(base, STUDENT_LAYERS), "last")},
                                      long_ids, BACKENDS, graphs, *((2, 2_000, 60) if quick else (5, 16_000, 300)))
    shared, student = by_backend["torch"]["shared"], by_backend["torch"]["student"]
    say("seconds per text by tokens:")
    for t in LENGTHS:
        say(f"  {t:4d} tokens: shared {shared[t] * 1e3:7.3f} ms, student {student[t] * 1e3:7.3f} ms "
            f"(ratio {student[t] / shared[t]:.2f})")
    for b in BACKENDS[1:]:
        say(f"  {b}, times torch's speed (torch seconds / {b} seconds) at 16/32/64/128 tokens: " + "; ".join(
            f"{k} " + " ".join(f"{by_backend['torch'][k][t] / by_backend[b][k][t]:.2f}" for t in LENGTHS)
            for k in ("shared", "student")))
    h = head_seconds(20_000 if quick else 200_000, 3)
    say(f"one head on a stored code: {h * 1e9:.1f} ns per text")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        tmp = Path(tmp)
        tiny = tmp / "tiny.parquet"
        sample_path = SAMPLE
        if quick:                                     # the planner check on a 400-row slice of the sample
            sample_path = tmp / "sample.parquet"
            pq.write_table(pq.read_table(SAMPLE).slice(0, 400), sample_path)
        pq.write_table(pq.read_table(SAMPLE).slice(0, 20), tiny)
        measured = run_jobs(tmp / "sample", sample_path)    # also trains the heads the 20-row run applies
        fixed = run_jobs(tmp / "fixed", tiny, tmp / "sample" / "heads")
        say(f"fixed seconds per run (20 rows): embed {fixed['embed']:.1f}, apply {fixed['apply']:.1f}")
        arch = Architecture.of(base.model.config)
        backends = {b: {"recipe": backend_recipe(b),
                         "seconds_per_text": {"shared": fit(by_backend[b]["shared"]),
                                              "teacher": fit(by_backend[b]["shared"]),
                                              "student": fit(by_backend[b]["student"])},
                         "per_length_seconds": by_backend[b],
                         "speed_vs_torch": {k: {t: by_backend["torch"][k][t] / by_backend[b][k][t] for t in LENGTHS}
                                            for k in ("shared", "student")}}
                    for b in BACKENDS[1:]}
        costs = {"format_version": 1, "dim": 384,
                 "measured": {"command": command, "date": str(date.today()), "threads": threads,
                              "machine": f"{platform.machine()}, {threads} CPU threads, torch {torch.__version__}, "
                                         f"onnxruntime {onnxruntime.__version__}"},
                 "architectures": {"shared": vars(arch), "teacher": vars(arch),
                                   "student": vars(Architecture.of(base.model.config, STUDENT_LAYERS))},
                 "devices": {"cpu": {"seconds_per_text": {"shared": fit(shared), "teacher": fit(shared),
                                                          "student": fit(student)},
                                     "head_seconds_per_text": h,
                                     "fixed_seconds": {"embed": round(fixed["embed"], 2),
                                                       "apply": round(fixed["apply"], 2)},
                                     "backends": backends}},
                 "per_length_seconds": {"shared": shared, "student": student}}
        # (4) the planner against a measured run on the shipped sample
        model = CostModel.from_dict(costs)
        sample_texts = pq.read_table(sample_path, columns=["text"]).column("text").to_pylist()
        n_tok = np.minimum(tokenize(base.tokenizer, sample_texts, 1 << 30)[1], 256)
        p = plan(model, "cpu", 2, len(sample_texts), float(np.mean(n_tok)))
        got = measured["embed"] + measured["apply"]
        ratio = p.seconds["shared"] / got
        say(f"planner vs measured, shipped sample ({len(sample_texts):,} texts, {np.mean(n_tok):.1f} tokens, 2 "
            f"heads): predicted {p.seconds['shared']:.1f} s, measured embed {measured['embed']:.1f} s + apply "
            f"{measured['apply']:.1f} s = {got:.1f} s: ratio {ratio:.2f} (bar: within 25%, "
            f"{'met' if abs(ratio - 1) <= 0.25 else 'NOT met'})")
        costs["planner_check"] = {"texts": len(sample_texts), "mean_tokens": float(np.mean(n_tok)),
                                  "predicted_seconds": p.seconds["shared"], "measured_seconds": got,
                                  "embed_seconds": measured["embed"], "apply_seconds": measured["apply"],
                                  "ratio": ratio}
        # (5) per backend: the shared encoder pass per 1M texts at the sample's mean length, against torch
        mean = float(np.mean(n_tok))
        torch_1m = plan(model, "cpu", 1, 1e6, mean).encoder_seconds_per_million
        say(f"shared encoder pass per 1M texts at the sample's mean length ({mean:.1f} tokens), {threads} threads:")
        summary = {}
        for b in BACKENDS:
            s_1m = plan(model, "cpu", 1, 1e6, mean, backend=b).encoder_seconds_per_million
            summary[b] = {"seconds_per_million": s_1m, "speed_vs_torch": torch_1m / s_1m}
            say(f"  {b:<10} {s_1m:9,.0f} s = {s_1m / 3600:5.2f} hours ({s_1m * threads / 3600:5.2f} CPU-hours), "
                f"{torch_1m / s_1m:.2f}x torch's speed")
        costs["backend_summary"] = {"mean_tokens": mean, "backends": summary}
    return costs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="also write docs/costs.json (the planner's default)")
    ap.add_argument("--quick", action="store_true", help="small inputs, fewer repeats (a smoke run; never written "
                                                         "to docs/)")
    ap.add_argument("--out", default=str(OUT / "costs.json"), help="where the measured costs go")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.quick and args.write:
        ap.error("--quick measures too little for the planner's default; drop --write")
    torch.set_num_threads(args.threads)
    command = "python bench/costs.py" + (" --quick" if args.quick else "") + (" --write" if args.write else "")
    costs = measure_costs(args.threads, print, args.quick, command)
    text = json.dumps(costs, indent=2) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    if args.write:
        DOCS.write_text(text)
    print(f"wrote {args.out}" + (f" and {DOCS}" if args.write else ""))


if __name__ == "__main__":
    main()
