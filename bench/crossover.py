"""Shared encoder or one model per task? Cost and accuracy measured side by side, and the per-text costs the planner
(``python -m jobs.plan``) reads.

    python bench/crossover.py [--tasks ... | all] [--steps 100] [--scale 1] [--write]   # make crossover, ~50 minutes
    python bench/crossover.py --costs-only [--write]                                   # ~7 minutes

Cost (measured on this machine; --write updates docs/costs.json, the planner's default):
(1) Seconds per text of an encoder pass through the pipeline's own extractor (tokenize, length-bucketed batches,
    pooling) at 16, 32, 64 and 128 tokens, for the shared encoder (the packaged all-MiniLM-L6-v2, 6 layers; a per-task
    teacher has the same architecture) and for a per-task student: the teacher's first 2 layers (a third of its
    FLOPs, as DistilBERT-style students keep a fraction of the teacher's depth). Fitted as a + b·t + c·t².
(2) Seconds per text of one head on stored 48-byte codes (fused scoring of 20 binary linear heads on 200,000 codes).
(3) Fixed seconds per job run (Spark session, model load, publication): the embed and apply jobs on a 20-row input.
(4) The planner's prediction for the shipped 5,000-text sample (its mean token count, 2 heads) against a measured
    embed + apply run on it (bar: within 25%).
Accuracy (the transfer study's tasks, rows and caps; default: its 12 held-out + 2 tuning tasks; --tasks all: 22):
(5) Per task, a teacher (the base fine-tuned end to end on that task alone) and a student (the teacher's first 2
    layers, distilled from the teacher's logits on the training texts plus the hard labels), both trained by
    heads.multitask with early stopping on the task's validation split; saved as model folders with lineage.json
    under out/crossover/models/<task>/. Against them: the trained shared encoder (out/study/models/ste_mixed, trained
    with the study's recipe when absent) + a linear head on fp32 features and on the 48-byte codes, and the project's
    MLP head on the codes. Training seconds per new task for each path.
(6) Cost per 1M texts for N = 1..20 tasks (seconds and FLOPs), the crossover N*, and the bars.
Writes out/crossover/report.md, results.json, costs.json, crossover_cost.png and crossover_accuracy.png.
"""
from __future__ import annotations

import argparse
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
# Held-out tasks matter most (a per-task model needs a training run for each new task; the shared encoder a head):
# all 12 of the study's, and 2 of its tuning tasks for comparison. --tasks all adds the other 8 tuning tasks.
DEFAULT_TASKS = ["senteval/sst2", "tweeteval/emotion",
                 "senteval/mr", "senteval/cr", "senteval/mpqa", "senteval/sst5", "tweeteval/irony",
                 "tweeteval/offensive", "tweeteval/stance_abortion", "tweeteval/stance_atheism",
                 "tweeteval/stance_climate", "tweeteval/stance_feminist", "tweeteval/stance_hillary",
                 "blog_authorship/age_group"]


def student_of(loaded, layers: int):
    """The base with only its first ``layers`` transformer layers (what a per-task student is built from)."""
    from encoder.model import LoadedEncoder
    from heads.multitask import first_layers

    return LoadedEncoder(loaded.tokenizer, first_layers(loaded.model, layers).eval(), "cpu",
                         {"name": f"first{layers}", "sha256": "-"}, layers, loaded.hidden_size)


def seconds_per_text(encoders: dict[str, tuple], token_ids: list[list[int]], repeats: int = 5
                     ) -> dict[str, dict[int, float]]:
    """{name: (LoadedEncoder, layers)} -> {name: {tokens: median seconds per text}}. The encoders take turns within
    each repeat, so a slow spell of a shared machine slows all of them alike and their ratio stays honest."""
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
from encoder.features import FeatureSettings

    fxs = {k: FeatureExtractor(m, EncoderConfig(features=FeatureSettings(layers=layers))) for k, (m, layers) in encoders.items()}
    out: dict[str, dict[int, float]] = {k: {} for k in fxs}
    for t in LENGTHS:
        rows = [ids[:t - 1] + [ids[-1]] for ids in token_ids if len(ids) >= t][:max(300, 16_000 // t)]
        if len(rows) < 50:
            raise SystemExit(f"not enough texts of {t} tokens to time")
        ts: dict[str, list[float]] = {k: [] for k in fxs}
        for fx in fxs.values():
            fx.encode_ids(rows[:20], 20)                              # warm-up
        for _ in range(repeats):
            for k, fx in fxs.items():
                s = time.perf_counter()
                fx.encode_ids(rows, len(rows))
                ts[k].append((time.perf_counter() - s) / len(rows))
        for k in fxs:
            out[k][t] = float(np.median(ts[k]))
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

    spec = FeatureSpec.of(model={"name": "x", "sha256": "0"}, layers=(3, 4, 5, 6), layer_combine="mean", pooling="mean",
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


def run_jobs(tmp: Path, src: Path, heads: Path | None = None) -> dict[str, float]:
    """embed [-> train_heads] -> apply on ``src`` (with ``heads`` when given); wall seconds of each command."""
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
        s = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"{' '.join(cmd[1:3])} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        out[k] = time.perf_counter() - s
    return out


def measure_costs(threads: int, say) -> dict:
    """(1)-(4): the per-text costs the planner reads, and the planner's check against a measured job run."""
    from planning.flops import Architecture
    from encoder.model import load_encoder
    from planning.costs import CostModel, plan

    base = load_encoder("package", threads=threads)
    texts = pq.read_table(ROOT.parent / "shared/data/tweeteval/emoji/train.parquet", columns=["text"]) \
        .column("text").to_pylist()[:4000] if (ROOT.parent / "shared/data").is_dir() else []
    if not texts:                     # without the shared data: the shipped sample, repeated into long texts
        sample = pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist()
        texts = [" ".join(sample[i:i + 8]) for i in range(0, len(sample), 2)]
    ids = base.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    long_ids = [sum((x[1:-1] for x in ids[i:i + 10]), [ids[i][0]]) + [ids[i][-1]] for i in range(0, len(ids), 3)]
    timed = seconds_per_text({"shared": (base, "last4"), "student": (student_of(base, STUDENT_LAYERS), "last")},
                             long_ids)
    shared, student = timed["shared"], timed["student"]
    say("seconds per text by tokens:")
    for t in LENGTHS:
        say(f"  {t:4d} tokens: shared {shared[t] * 1e3:7.3f} ms, student {student[t] * 1e3:7.3f} ms "
            f"(ratio {student[t] / shared[t]:.2f})")
    h = head_seconds()
    say(f"one head on a stored code: {h * 1e9:.1f} ns per text")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        tmp = Path(tmp)
        tiny = tmp / "tiny.parquet"
        pq.write_table(pq.read_table(SAMPLE).slice(0, 20), tiny)
        measured = run_jobs(tmp / "sample", SAMPLE)        # also trains the heads the 20-row run applies
        fixed = run_jobs(tmp / "fixed", tiny, tmp / "sample" / "heads")
        say(f"fixed seconds per run (20 rows): embed {fixed['embed']:.1f}, apply {fixed['apply']:.1f}")
        arch = Architecture.of(base.model.config)
        costs = {"format_version": 1, "dim": 384,
                 "measured": {"command": "python bench/crossover.py --costs-only --write", "date": str(date.today()),
                              "machine": f"{platform.machine()}, {threads} CPU threads, torch {torch.__version__}"},
                 "architectures": {"shared": vars(arch), "teacher": vars(arch),
                                   "student": vars(Architecture.of(base.model.config, STUDENT_LAYERS))},
                 "devices": {"cpu": {"seconds_per_text": {"shared": fit(shared), "teacher": fit(shared),
                                                          "student": fit(student)},
                                     "head_seconds_per_text": h,
                                     "fixed_seconds": {"embed": round(fixed["embed"], 2),
                                                       "apply": round(fixed["apply"], 2)}}},
                 "per_length_seconds": {"shared": shared, "student": student}}
        # (4) the planner against a measured run on the shipped sample
        model = CostModel.from_dict(costs)
        sample_texts = pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist()
        n_tok = [min(len(x), 256) for x in base.tokenizer(sample_texts, add_special_tokens=True)["input_ids"]]
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
    (OUT / "costs.json").write_text(json.dumps(costs, indent=2) + "\n")
    return costs


# -- accuracy: per-task teachers and students against the shared encoder -----------------------------------------
def per_task_models(name: str, spec: tuple, rows: dict, steps: int, student_layers: int, threads: int, say) -> dict:
    """Teacher (the base fine-tuned on this task alone) and student (the teacher's first layers, distilled from the
    teacher's logits on the training texts plus the hard labels), both by heads.multitask; test accuracy, training
    seconds; saved as model folders with lineage.json and the task head in head.safetensors."""
    import dataclasses

    from safetensors.torch import save_file

    from encoder.model import load_encoder, save_model_folder
    from heads.multitask import MultiTaskConfig, first_layers, spec_features, task_logits, task_metric, \
        train_shared_encoder
    from transfer import MAX_LENGTH, TUNE_MAX_LENGTH, task_data

    td = task_data(name, spec, rows)
    base = load_encoder("package", threads=threads)
    cfg = MultiTaskConfig(max_steps=steps, eval_every=max(1, steps // 4), patience=2, texts_per_step=16,
                          token_budget=4096, max_length=TUNE_MAX_LENGTH, binary="off", keep_general=0.0,
                          loss_scaling="none", val_rows=len(td.val_texts), seed=0, warmup_steps=max(1, steps // 10))
    out: dict = {}
    quiet = (lambda m: None)
    feats_t = spec_features("last", base.num_layers, "mean", "mean", True)
    teacher = train_shared_encoder(base.model.train(), base.tokenizer, feats_t, [td], cfg, log=quiet)
    t0 = time.perf_counter()
    soft = task_logits(teacher, base.tokenizer, feats_t, td, td.train_texts, TUNE_MAX_LENGTH)
    soft_seconds = time.perf_counter() - t0
    feats_s = spec_features("last", student_layers, "mean", "mean", True)
    student = train_shared_encoder(first_layers(teacher.model, student_layers).train(), base.tokenizer, feats_s,
                                   [dataclasses.replace(td, train_teacher_logits=soft)], cfg, log=quiet)
    test_x, test_y = rows["test"]
    base_fp = dict(base.fingerprint)
    for role, trained, feats in (("teacher", teacher, feats_t), ("student", student, feats_s)):
        logits = task_logits(trained, base.tokenizer, feats, td, test_x, MAX_LENGTH)
        acc = 100 * task_metric(td.task.kind, logits, test_y)
        folder = OUT / "models" / td.task.name / role
        save_model_folder(folder, trained.model, base.tokenizer, {
            "name": f"{td.task.name}-{role}", "base": base_fp, "role": role,
            "task": {"name": td.task.name, "kind": td.task.kind, "columns": list(td.task.columns),
                     "classes": td.n_classes, "train_rows": len(td.train_texts), "validation_rows": len(td.val_texts)},
            "features": {"layers": list(feats.layers), "pooling": feats.pooling, "normalize": feats.normalize},
            "training": dataclasses.asdict(cfg) | ({"distilled_from": f"{td.task.name}-teacher"}
                                                   if role == "student" else {}),
            "best_step": trained.best_step, "history": trained.history})
        save_file({k: v.contiguous() for k, v in trained.heads[td.task.name].state_dict().items()},
                  str(folder / "head.safetensors"))
        out[role] = {"accuracy": acc, "best_step": trained.best_step, "steps": trained.steps,
                     "train_seconds": trained.seconds + (teacher.seconds + soft_seconds if role == "student" else 0)}
    say(f"  {name:28s} teacher {out['teacher']['accuracy']:5.1f} ({out['teacher']['train_seconds']:.0f} s)  "
        f"student {out['student']['accuracy']:5.1f} ({out['student']['train_seconds']:.0f} s incl. teacher)")
    return out


def shared_heads(name: str, spec: tuple, rows: dict, encoder, tokenizer) -> dict:
    """The shared encoder's frozen features (the default spec) -> linear heads (fp32, binary; the study's probe) and
    the project's MLP head (heads.train, as train_heads trains it) on the binary codes; test accuracy and fit seconds."""
    from heads.data import Chunk
    from heads.tasks import TaskConfig
    from heads.train import TrainConfig, train_heads
    from transfer import DEFAULT, binary, encode, probe

    ml = spec[1] == "multilabel"
    feats = {sp: encode(encoder, tokenizer, rows[sp][0], [DEFAULT])[DEFAULT] for sp in rows}
    y = {sp: rows[sp][1] for sp in rows}
    codes = {sp: binary(v) for sp, v in feats.items()}
    fp32 = probe(feats, y, ml)
    t1 = time.perf_counter()
    lin_bin = probe(codes, y, ml)
    t2 = time.perf_counter()
    cols = list(spec[2])
    x = np.concatenate([codes[sp] for sp in ("train", "validation", "test")])
    yy = np.concatenate([y[sp] for sp in ("train", "validation", "test")])
    yy = yy if yy.ndim == 2 else yy[:, None]
    n = {sp: len(codes[sp]) for sp in codes}
    is_val = np.repeat([False, True, False], [n["train"], n["validation"], n["test"]])
    is_test = np.repeat([False, False, True], [n["train"], n["validation"], n["test"]])
    chunk = Chunk(np.arange(len(x)), x.astype(np.float32), {c: yy[:, j] for j, c in enumerate(cols)}, is_val, is_test)
    task = TaskConfig(name="t", kind="multilabel" if ml else "multiclass", columns=tuple(cols), head="mlp")
    mlp = train_heads(lambda: iter([chunk]), [task], x.shape[1], TrainConfig())[0]
    t3 = time.perf_counter()
    m = mlp.metrics
    return {"fp32": fp32, "binary": lin_bin, "mlp_binary": 100 * (m["micro_f1"] if ml else m["accuracy"]),
            "linear_fit_seconds": (t2 - t1) / 3, "mlp_fit_seconds": t3 - t2}    # the probe fits 3 values of C


def cost_curves(costs: dict, tokens: np.ndarray, n_max: int = 20, texts: float = 1e6) -> dict:
    """heads.costs.plan for N = 1..n_max tasks on ``texts`` texts of the given token counts (a distribution)."""
    from planning.flops import Architecture, encoder_flops
    from planning.costs import CostModel, plan

    model = CostModel.from_dict(costs)
    plans = [plan(model, "cpu", n, texts, tokens) for n in range(1, n_max + 1)]
    dev, arch = model.device("cpu"), model.architectures
    return {"n": [p.tasks for p in plans],
            "seconds": {k: [p.seconds[k] for p in plans] for k in ("shared", "student", "teacher")},
            "flops": {k: [p.flops[k] for p in plans] for k in ("shared", "student", "teacher")},
            "n_star_seconds": plans[0].crossover_seconds, "n_star_flops": plans[0].crossover_flops,
            "per_text_seconds": {k: float(np.mean(dev.encoder_seconds(k, tokens.astype(np.float64))))
                                 for k in ("shared", "student", "teacher")},
            "per_text_flops": {k: encoder_flops(arch[k], tokens) / len(tokens) for k in arch},
            "n_star_flops_by_student_layers": {
                k: plan(CostModel({**arch, "student": Architecture(k, arch["shared"].hidden,
                                                                   arch["shared"].intermediate)},
                                  model.devices, model.dim, model.measured), "cpu", 1, texts, tokens).crossover_flops
                for k in range(1, arch["shared"].layers)},
            "mean_tokens": float(tokens.mean()),
            "tokens_p50_p90_max": [float(np.percentile(tokens, 50)), float(np.percentile(tokens, 90)),
                                   int(tokens.max())],
            "student_layers": arch["student"].layers, "shared_layers": arch["shared"].layers, "texts": texts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--costs-only", action="store_true", help="only measure the planner's costs (~5 minutes)")
    ap.add_argument("--costs", help="read measured costs from this JSON instead of measuring them again")
    ap.add_argument("--write", action="store_true", help="also write docs/costs.json (the planner's default) and "
                                                         "the charts to docs/")
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                    help="comma-separated study tasks, or 'all' (every tuning and held-out task of bench/transfer.py)")
    ap.add_argument("--steps", type=int, default=100, help="max optimiser steps of each teacher and each student")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every row cap")
    ap.add_argument("--shared", default=str(ROOT / "out/study/models/ste_mixed"),
                    help="the trained shared encoder's model folder (trained with the study's recipe if absent)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    t_start = time.perf_counter()
    if args.costs:
        costs = json.loads(Path(args.costs).read_text())
        say(f"costs read from {args.costs} (measured {costs['measured']['date']})")
    else:
        costs = measure_costs(args.threads, say)
    if args.write:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "costs.json").write_text(json.dumps(costs, indent=2) + "\n")
    if args.costs_only:
        say(f"wrote {OUT / 'costs.json'}" + (" and docs/costs.json" if args.write else ""))
        return

    from _setup import require_data
    from transfer import HELD_OUT, TUNE, load_rows, tuning_rows, tune

    from encoder.model import load_encoder

    data = require_data()
    labels = json.loads((data / "labels.json").read_text())
    tasks = TUNE + HELD_OUT if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TUNE + HELD_OUT]
    if unknown:
        raise SystemExit(f"--tasks: {unknown} are not study tasks; choose from {TUNE + HELD_OUT} or 'all'")
    s = args.scale
    specs, tune_rows, seen = tuning_rows(data, labels, s)
    caps = {"train": int(800 * s), "validation": int(200 * s), "test": int(500 * s)}            # as the study
    tune_probe_caps = {"train": int(500 * s), "validation": int(150 * s), "test": int(400 * s)}
    rows = {n: load_rows(data, specs[n][0], specs[n][2], caps if n in HELD_OUT else tune_probe_caps, seen,
                         ("train", "validation", "test") if n in HELD_OUT else ("test",)) for n in tasks}
    shared_path = Path(args.shared)
    if not (shared_path / "model.safetensors").is_file():
        say(f"no shared encoder at {shared_path}: training it with the study's recipe (ste_mixed, ~7 minutes)")
        tune("ste_mixed", specs, tune_rows, threads=args.threads, say=say)
        shared_path = ROOT / "out/study/models/ste_mixed"
    shared = load_encoder(str(shared_path), threads=args.threads)
    say(f"\nshared encoder: {shared_path} ({shared.fingerprint.get('name', '?')})")
    say(f"per-task teachers ({shared.num_layers} layers) and students (first {STUDENT_LAYERS} layers), "
        f"{args.steps} steps x 16 texts each:")
    acc: dict = {}
    for n in tasks:
        acc[n] = per_task_models(n, specs[n], rows[n], args.steps, STUDENT_LAYERS, args.threads, say)
        acc[n]["shared"] = shared_heads(n, specs[n], rows[n], shared.model, shared.tokenizer)
        sh = acc[n]["shared"]
        say(f"  {'':28s} shared linear fp32 {sh['fp32']:5.1f}  binary {sh['binary']:5.1f}  "
            f"mlp binary {sh['mlp_binary']:5.1f}")
    tok = shared.tokenizer([t for n in tasks for t in rows[n]["test"][0]], truncation=True, max_length=128,
                           return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    curves = cost_curves(costs, np.fromiter((len(x) for x in tok), np.int64, len(tok)))
    results = {"tasks": tasks, "held_out": [n for n in tasks if n in HELD_OUT],
               "tuning": [n for n in tasks if n in TUNE], "accuracy": acc, "curves": curves, "costs": costs,
               "shared": str(shared_path), "settings": vars(args) | {"caps": caps, "tune_probe_caps": tune_probe_caps,
                                                                     "student_layers": STUDENT_LAYERS},
               "seconds": round(time.perf_counter() - t_start, 1)}
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report(results, say)
    if args.write:
        import shutil
        for f in ("crossover_cost.png", "crossover_accuracy.png"):
            shutil.copy(OUT / f, ROOT / "docs" / f)


def _avg(results: dict, tasks: list[str], key: str) -> float:
    def get(n: str) -> float:
        a = results["accuracy"][n]
        return a[key]["accuracy"] if key in ("teacher", "student") else a["shared"][key]
    return float(np.mean([get(n) for n in tasks])) if tasks else float("nan")


PATH_KEYS = (("teacher", "teacher (6 layers, per task)"), ("student", "student (2 layers, per task)"),
             ("fp32", "shared + linear, fp32 (1,536 B)"), ("binary", "shared + linear, binary (48 B)"),
             ("mlp_binary", "shared + MLP, binary (48 B)"))


def report(results: dict, say) -> None:
    """Bars, tables and the two charts from results.json."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, held, tune = results["curves"], results["held_out"], results["tuning"]
    costs = results["costs"]
    pc = costs.get("planner_check", {})
    h_student, h_bin = _avg(results, held, "student"), _avg(results, held, "binary")
    h_mlp = _avg(results, held, "mlp_binary")
    n_star, n_star_f = c["n_star_seconds"], c["n_star_flops"]
    ratio_l = f"{c['student_layers']}/{c['shared_layers']} layers"
    ratio_s = c["per_text_seconds"]["student"] / c["per_text_seconds"]["shared"]
    ratio_f = c["per_text_flops"]["student"] / c["per_text_flops"]["shared"]
    bars = [(f"crossover N* = {n_star} tasks by measured CPU seconds (N* by FLOPs: {n_star_f}; student = "
             f"{ratio_l}, {ratio_f:.2f} of the shared encoder's FLOPs and {ratio_s:.2f} of its seconds per text; "
             "paper: about 7)", n_star is not None),
            (f"held-out tasks: shared binary codes + linear heads {h_bin:.2f} vs per-task students {h_student:.2f} "
             f"({h_bin - h_student:+.2f}; bar: within 2 points or ahead)", h_bin >= h_student - 2.0),
            (f"held-out tasks: shared binary codes + MLP heads {h_mlp:.2f} vs per-task students {h_student:.2f} "
             f"({h_mlp - h_student:+.2f}; bar: within 2 points or ahead)", h_mlp >= h_student - 2.0)]
    if pc:
        bars.append((f"planner vs a measured embed + apply run ({pc['texts']:,} texts, {pc['mean_tokens']:.1f} "
                     f"tokens, 2 heads): predicted {pc['predicted_seconds']:.1f} s, measured "
                     f"{pc['measured_seconds']:.1f} s, ratio {pc['ratio']:.2f} (bar: within 25%)",
                     abs(pc["ratio"] - 1) <= 0.25))
    say("\nBars (both kinds of binary head were reported paths before the run; neither is chosen per task):")
    for text, ok in bars:
        say(f"  [{'met' if ok else 'NOT met'}] {text}")
    sel = [1, 2, 5, 7, 10, 15, 20]
    lines = ["# Shared encoder or one model per task: cost and accuracy crossover", "",
             f"`python bench/crossover.py` ({results['seconds'] / 60:.0f} minutes on 2 CPU cores; settings "
             f"`{json.dumps(results['settings'], default=str)}`); costs measured {costs['measured']['date']} on "
             f"{costs['measured']['machine']}. Shared encoder: `{results['shared']}`.", "", "## Bars", ""]
    lines += [f"- **{'met' if ok else 'NOT met'}**: {t}" for t, ok in bars]
    lines += ["", f"## Cost per {c['texts']:,.0f} texts (CPU, 2 threads)", "",
              f"Length distribution: the test texts of the tasks below (tweets and sentences, truncated at 128 "
              f"tokens): mean {c['mean_tokens']:.1f} tokens, median {c['tokens_p50_p90_max'][0]:.0f}, "
              f"90th percentile {c['tokens_p50_p90_max'][1]:.0f}, max {c['tokens_p50_p90_max'][2]}. Seconds: each "
              "path's measured seconds per text at each length (fitted a + b·t + c·t²) averaged over the "
              "distribution, plus each job run's fixed seconds (the shared path: one embed run and one apply run "
              "for all N heads; the per-task path: one run per model). FLOPs: counted from the architectures "
              "(`encoder/flops.py`).", "",
              "| N tasks | shared s | students s | teachers s | shared FLOPs | students FLOPs | teachers FLOPs |",
              "|---|---|---|---|---|---|---|"]
    for n in sel:
        i = n - 1
        lines.append(f"| {n} | {c['seconds']['shared'][i]:,.0f} | {c['seconds']['student'][i]:,.0f} | "
                     f"{c['seconds']['teacher'][i]:,.0f} | {c['flops']['shared'][i]:.3g} | "
                     f"{c['flops']['student'][i]:.3g} | {c['flops']['teacher'][i]:.3g} |")
    lines += ["", f"N* (shared no dearer than N students): **{n_star}** by seconds, **{n_star_f}** by FLOPs; student "
              f"size {ratio_l} ({ratio_f:.2f} of the FLOPs, {ratio_s:.2f} of the measured seconds per text). "
              "N* by FLOPs for other student depths (layers kept: N*): " + ", ".join(
                  f"{k}: {v}" for k, v in c["n_star_flops_by_student_layers"].items()) + ". "
              "Storage per text: 48 B binary codes vs 1,536 B fp32 features (per-task models store only "
              "predictions).", ""]
    for group, tasks in (("Held-out tasks (never seen by the shared encoder's tuning)", held),
                         ("Tuning tasks (test splits)", tune)):
        if not tasks:
            continue
        lines += [f"## Accuracy: {group}", "", "| task | " + " | ".join(k for _, k in PATH_KEYS) + " |",
                  "|---|" + "---|" * len(PATH_KEYS)]
        for n in tasks:
            a = results["accuracy"][n]
            vals = [a["teacher"]["accuracy"], a["student"]["accuracy"]] + [a["shared"][k] for k, _ in PATH_KEYS[2:]]
            lines.append(f"| {n} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
        lines.append("| **average** | " + " | ".join(f"**{_avg(results, tasks, k):.2f}**" for k, _ in PATH_KEYS)
                     + " |")
        lines.append("")
    tasks = results["tasks"]
    tsec = {k: float(np.mean([v(results['accuracy'][n]) for n in tasks])) for k, v in (
        ("teacher", lambda a: a["teacher"]["train_seconds"]), ("student", lambda a: a["student"]["train_seconds"]),
        ("linear", lambda a: a["shared"]["linear_fit_seconds"]), ("mlp", lambda a: a["shared"]["mlp_fit_seconds"]))}
    lines += ["## Training time per new task (mean over the tasks, 2 CPU cores)", "",
              "| path | seconds |", "|---|---|",
              f"| teacher: fine-tune the 6-layer encoder | {tsec['teacher']:.0f} |",
              f"| student: teacher + its logits + distil the 2-layer student | {tsec['student']:.0f} |",
              f"| shared: linear head on stored codes (one C) | {tsec['linear']:.2f} |",
              f"| shared: MLP head on stored codes | {tsec['mlp']:.2f} |", "",
              "The shared path's codes are already in the embeddings table: a new task needs labels and a head "
              "fit, no encoder pass over its training texts beyond the nightly embed.", "",
              "![cost vs tasks](crossover_cost.png)", "", "![accuracy per task](crossover_accuracy.png)", ""]
    (OUT / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ns = c["n"]
    for ax, key, unit in ((axes[0], "seconds", "hours on 2 CPU cores"), (axes[1], "flops", "PFLOPs")):
        div = 3600 if key == "seconds" else 1e15
        for p, label in (("shared", "shared encoder + N heads"), ("student", f"N students ({ratio_l})"),
                         ("teacher", "N teachers (6 layers)")):
            ax.plot(ns, np.asarray(c[key][p]) / div, marker="o", ms=3, label=label)
        star = c["n_star_seconds" if key == "seconds" else "n_star_flops"]
        if star is not None:
            ax.axvline(star, color="grey", ls="--")
            ax.annotate(f"N* = {star}", (star, ax.get_ylim()[1] * 0.9), xytext=(4, 0), textcoords="offset points")
        ax.set_xticks(range(0, len(ns) + 1, 2))
        ax.set_xlabel("tasks served (N)")
        ax.set_ylabel(f"{unit} per {c['texts']:,.0f} texts")
        ax.set_title(f"{'Measured seconds (2 CPU cores)' if key == 'seconds' else 'Counted FLOPs'}, "
                     f"{c['mean_tokens']:.0f} tokens on average")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "crossover_cost.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    x = np.arange(len(tasks))
    w = 0.8 / len(PATH_KEYS)
    for i, (k, label) in enumerate(PATH_KEYS):
        vals = [results["accuracy"][n][k]["accuracy"] if k in ("teacher", "student") else
                results["accuracy"][n]["shared"][k] for n in tasks]
        ax.bar(x + i * w, vals, w, label=label)
    ax.set_xticks(x + 0.4 - w / 2)
    ax.set_xticklabels([n.split("/")[-1] + ("" if n in held else " (tuned)") for n in tasks], rotation=30,
                       ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Per-task models vs the shared encoder's heads")
    ax.set_ylim(0, 112)
    ax.legend(fontsize=7, ncol=5, loc="upper center")
    fig.tight_layout()
    fig.savefig(OUT / "crossover_accuracy.png", dpi=120)
    plt.close(fig)
    say(f"\nwrote {OUT / 'report.md'} and charts")


if __name__ == "__main__":
    main()
