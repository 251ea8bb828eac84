"""Shared encoder or one model per task? Accuracy measured side by side, and the cost of serving N tasks from the
per-text costs bench/costs.py measures (the ones the planner, ``python -m jobs.plan``, reads).

    python bench/crossover.py [--tasks ... | all] [--steps 100] [--scale 1] [--costs FILE] [--write]   # ~40 minutes
    python bench/crossover.py --quick          # the whole path: 2 tasks, tiny caps, minutes (figures mean nothing)
    python bench/costs.py [--write]            # the costs themselves, ~7 minutes

Accuracy (the transfer study's tasks, rows and caps, bench/study.py; default: its 12 held-out + 2 tuning tasks;
--tasks all: 22):
(1) Per task, a teacher (the base fine-tuned end to end on that task alone) and a student (the teacher's first 2
    layers, distilled from the teacher's logits on the training texts plus the hard labels), both trained by
    ``tuning`` with early stopping on the task's validation split; saved as model folders with lineage.json under
    <out>/models/<task>/. Against them: the trained shared encoder (out/study/models/ste_mixed, trained with the
    study's recipe when absent) + a linear head on fp32 features and on the 48-byte codes, and the project's MLP head
    on the codes. Training seconds per new task for each path.
(2) Cost per 1M texts for N = 1..20 tasks (seconds and FLOPs), the crossover N*, and the bars, from the costs in
    --costs (default docs/costs.json, the planner's; `make crossover` measures them first with bench/costs.py).
Writes <out>/report.md, results.json (its "settings" hold the caps the run used), crossover_cost.png and
crossover_accuracy.png; --write copies the two charts to docs/.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT, require_data  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from study import (ALL_TASKS, DEFAULT, HELD_OUT, MODELS, QUICK, STUDENT_LAYERS, TUNE, Recipe, StudyCaps,  # noqa: E402
                   TaskSpec, binary, encode_groups, load_study, probe, task_data, tune)
from timing import once  # noqa: E402

OUT = ROOT / "out" / "crossover"
DEFAULT_COSTS = ROOT / "docs" / "costs.json"
# Held-out tasks matter most (a per-task model needs a training run for each new task; the shared encoder a head):
# all 12 of the study's, and 2 of its tuning tasks for comparison. --tasks all adds the other 8 tuning tasks.
DEFAULT_TASKS = ("senteval/sst2", "tweeteval/emotion") + HELD_OUT
QUICK_TASKS = ("senteval/sst2", "senteval/mr")


# -- accuracy: per-task teachers and students against the shared encoder -----------------------------------------
def per_task_models(name: str, spec: TaskSpec, rows: dict, steps: int, caps: StudyCaps, models: Path,
                    threads: int, say) -> dict:
    """Teacher (the base fine-tuned on this task alone) and student (the teacher's first layers, distilled from the
    teacher's logits on the training texts plus the hard labels), both by ``tuning``; test accuracy, training
    seconds; saved as model folders with lineage.json and the task head in head.safetensors under <models>/<task>/."""
    import dataclasses

    from safetensors.torch import save_file

    from encoder.features import FeatureSettings
    from encoder.model import load_encoder, save_model_folder
    from tuning.config import MultiTaskConfig
    from tuning.distill import first_layers, task_logits
    from tuning.loop import train_shared_encoder
    from tuning.losses import task_metric

    td = task_data(name, spec, rows)
    base = load_encoder("package", threads=threads)
    cfg = MultiTaskConfig(max_steps=steps, eval_every=max(1, steps // 4), patience=2, texts_per_step=16,
                          token_budget=4096, max_length=caps.tune_max_length, binary="off", keep_general=0.0,
                          loss_scaling="none", val_rows=len(td.val_texts), seed=0, warmup_steps=max(1, steps // 10))
    out: dict = {}
    quiet = (lambda m: None)
    last = FeatureSettings(layers="last", layer_combine="mean", pooling="mean", normalize=True)
    feats_t = last.resolve(base.num_layers)
    teacher = train_shared_encoder(base.model.train(), base.tokenizer, feats_t, [td], cfg, log=quiet)
    soft_seconds, soft = once(lambda: task_logits(teacher, base.tokenizer, feats_t, td, td.train_texts,
                                                  caps.tune_max_length))
    feats_s = last.resolve(STUDENT_LAYERS)
    student = train_shared_encoder(first_layers(teacher.model, STUDENT_LAYERS).train(), base.tokenizer, feats_s,
                                   [dataclasses.replace(td, train_teacher_logits=soft)], cfg, log=quiet)
    test_x, test_y = rows["test"]
    base_fp = dict(base.fingerprint)
    for role, trained, feats in (("teacher", teacher, feats_t), ("student", student, feats_s)):
        logits = task_logits(trained, base.tokenizer, feats, td, test_x, caps.max_length)
        acc = 100 * task_metric(td.task.kind, logits, test_y)
        folder = models / td.task.name / role
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


def shared_heads(spec: TaskSpec, rows: dict, encoder, tokenizer, caps: StudyCaps) -> dict:
    """The shared encoder's frozen features (the default spec) -> linear heads (fp32, binary; the study's probe) and
    the project's MLP head (heads.train, as train_heads trains it) on the binary codes; test accuracy and fit
    seconds."""
    from heads.data import Chunk
    from heads.tasks import TaskConfig
    from heads.train import TrainConfig, train_heads

    ml = spec.kind == "multilabel"
    got = encode_groups(encoder, tokenizer, {sp: rows[sp][0] for sp in rows}, caps.max_length)
    feats = {sp: got[sp][DEFAULT] for sp in rows}
    y = {sp: rows[sp][1] for sp in rows}
    codes = {sp: binary(v) for sp, v in feats.items()}
    fp32 = probe(feats, y, ml, caps.c_grid)
    lin_fit, lin_bin = once(lambda: probe(codes, y, ml, caps.c_grid))
    cols = list(spec.columns)
    x = np.concatenate([codes[sp] for sp in ("train", "validation", "test")])
    yy = np.concatenate([y[sp] for sp in ("train", "validation", "test")])
    yy = yy if yy.ndim == 2 else yy[:, None]
    n = {sp: len(codes[sp]) for sp in codes}
    is_val = np.repeat([False, True, False], [n["train"], n["validation"], n["test"]])
    is_test = np.repeat([False, False, True], [n["train"], n["validation"], n["test"]])
    chunk = Chunk(np.arange(len(x)), x.astype(np.float32), {c: yy[:, j] for j, c in enumerate(cols)}, is_val, is_test)
    task = TaskConfig(name="t", kind="multilabel" if ml else "multiclass", columns=tuple(cols), head="mlp")
    mlp_fit, fitted = once(lambda: train_heads(lambda: iter([chunk]), [task], x.shape[1], TrainConfig()))
    mlp = fitted[0]
    m = mlp.metrics
    return {"fp32": fp32, "binary": lin_bin, "mlp_binary": 100 * (m["micro_f1"] if ml else m["accuracy"]),
            "linear_fit_seconds": lin_fit / len(caps.c_grid), "mlp_fit_seconds": mlp_fit}   # one fit per C


def cost_curves(costs: dict, tokens: np.ndarray, n_max: int = 20, texts: float = 1e6) -> dict:
    """planning.costs.plan for N = 1..n_max tasks on ``texts`` texts of the given token counts (a distribution)."""
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--costs", default=str(DEFAULT_COSTS),
                    help="measured costs (bench/costs.py writes out/crossover/costs.json; default: the planner's "
                         "docs/costs.json)")
    ap.add_argument("--write", action="store_true", help="also copy the charts to docs/")
    ap.add_argument("--tasks", default=None,
                    help="comma-separated study tasks, or 'all' (every tuning and held-out task of bench/study.py); "
                         "default: 2 tuning + the 12 held-out tasks (--quick: " + ",".join(QUICK_TASKS) + ")")
    ap.add_argument("--steps", type=int, default=None,
                    help="max optimiser steps of each teacher and each student (100; --quick: 3)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every row cap")
    ap.add_argument("--quick", action="store_true", help="smoke run: bench/study.py's QUICK caps, 2 tasks, 3 steps, "
                                                         "out/crossover_quick")
    ap.add_argument("--shared", default=str(MODELS / "ste_mixed"),
                    help="the trained shared encoder's model folder (trained with the study's recipe if absent; "
                         "--quick: with 4 steps, into <out>/shared)")
    ap.add_argument("--out", default=None, help=f"report folder (default {OUT}; --quick: out/crossover_quick)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    q = args.quick
    args.steps = args.steps or (3 if q else 100)
    args.out = args.out or str(ROOT / "out" / "crossover_quick" if q else OUT)
    default_tasks = QUICK_TASKS if q else DEFAULT_TASKS
    args.tasks = list(ALL_TASKS) if args.tasks == "all" else \
        [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else list(default_tasks)
    unknown = [t for t in args.tasks if t not in ALL_TASKS]
    if unknown:
        ap.error(f"--tasks: {unknown} are not study tasks; choose from {list(ALL_TASKS)} or 'all'")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from encoder.encode import tokenize
    from encoder.model import load_encoder

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    caps = (QUICK if args.quick else StudyCaps()).scaled(args.scale)

    def say(msg: str) -> None:
        print(msg, flush=True)

    t_start = time.perf_counter()
    costs = json.loads(Path(args.costs).read_text())
    say(f"costs read from {args.costs} (measured {costs['measured']['date']} on {costs['measured']['machine']})")
    data = require_data()
    tasks = args.tasks
    study = load_study(data, caps, tasks, sick=False)
    rows = study.rows
    shared_path = Path(args.shared)
    if not (shared_path / "model.safetensors").is_file():
        recipe = Recipe(steps=4, texts_per_step=8) if args.quick else Recipe()
        models = out / "shared" if args.quick else MODELS
        say(f"no shared encoder at {shared_path}: training it with the study's recipe (ste_mixed, {recipe.steps} "
            f"steps) into {models}")
        tune("ste_mixed", recipe, caps, study, models, args.threads, say)
        shared_path = models / "ste_mixed"
    shared = load_encoder(str(shared_path), threads=args.threads)
    say(f"\nshared encoder: {shared_path} ({shared.fingerprint.get('name', '?')})")
    say(f"per-task teachers ({shared.num_layers} layers) and students (first {STUDENT_LAYERS} layers), "
        f"{args.steps} steps x 16 texts each:")
    acc: dict = {}
    for n in tasks:
        acc[n] = per_task_models(n, study.specs[n], rows[n], args.steps, caps, out / "models", args.threads, say)
        acc[n]["shared"] = shared_heads(study.specs[n], rows[n], shared.model, shared.tokenizer, caps)
        sh = acc[n]["shared"]
        say(f"  {'':28s} shared linear fp32 {sh['fp32']:5.1f}  binary {sh['binary']:5.1f}  "
            f"mlp binary {sh['mlp_binary']:5.1f}")
    tok = tokenize(shared.tokenizer, [t for n in tasks for t in rows[n]["test"][0]], caps.max_length)[0]
    curves = cost_curves(costs, np.fromiter((len(x) for x in tok), np.int64, len(tok)))
    results = {"tasks": tasks, "held_out": [n for n in tasks if n in HELD_OUT],
               "tuning": [n for n in tasks if n in TUNE], "accuracy": acc, "curves": curves, "costs": costs,
               "shared": str(shared_path), "removed_seen_texts": study.removed,
               "settings": vars(args) | {"caps": caps.to_json(), "student_layers": STUDENT_LAYERS,
                                         "student_texts_per_step": 16},
               "command": " ".join(["python bench/crossover.py", *(sys.argv[1:] if argv is None else argv)]),
               "seconds": round(time.perf_counter() - t_start, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report(results, say, out)
    if args.write:
        import shutil
        for f in ("crossover_cost.png", "crossover_accuracy.png"):
            shutil.copy(out / f, ROOT / "docs" / f)


def _avg(results: dict, tasks: list[str], key: str) -> float:
    def get(n: str) -> float:
        a = results["accuracy"][n]
        return a[key]["accuracy"] if key in ("teacher", "student") else a["shared"][key]
    return float(np.mean([get(n) for n in tasks])) if tasks else float("nan")


PATH_KEYS = (("teacher", "teacher (6 layers, per task)"), ("student", "student (2 layers, per task)"),
             ("fp32", "shared + linear, fp32 (1,536 B)"), ("binary", "shared + linear, binary (48 B)"),
             ("mlp_binary", "shared + MLP, binary (48 B)"))


def report(results: dict, say, out: Path = OUT) -> None:
    """Bars, tables and the two charts from results.json, into ``out``."""
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
             f"`{results.get('command', 'python bench/crossover.py')}` ({results['seconds'] / 60:.0f} minutes on 2 "
             "CPU cores; settings "
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
              "(`planning/flops.py`).", "",
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
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

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
    fig.savefig(out / "crossover_cost.png", dpi=120)
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
    fig.savefig(out / "crossover_accuracy.png", dpi=120)
    plt.close(fig)
    say(f"\nwrote {out / 'report.md'} and charts")


if __name__ == "__main__":
    main()
