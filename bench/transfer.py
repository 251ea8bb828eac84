"""The transfer study: does multi-task fine-tuning make the shared encoder (and its 48-byte codes) better on tasks it
never saw? All figures in one run, on 2 CPU cores in under an hour by row caps (--scale 2 doubles them).

    python bench/transfer.py [--steps 150 --variants plain,ste,ste_mixed --scale 1]    # make study, ~50 minutes
    python bench/transfer.py --quick                  # the whole path on tiny caps, a few minutes (out/study_quick)

Task groups, caps and loaders are bench/study.py's (fixed, so figures stay comparable across changes):
  tune on   senteval/sst2, senteval/trec, senteval/subj, tweeteval/emotion, tweeteval/hate, tweeteval/sentiment,
            tweeteval/emoji, goemotions (28 labels), ag_news (hash split), blog_authorship/gender
  held out  senteval/mr, senteval/cr, senteval/mpqa, senteval/sst5, tweeteval/irony, tweeteval/offensive, the five
            tweeteval/stance_* tasks, blog_authorship/age_group (never seen by tuning, early stopping or settings)
Steps:
 1. Tune the packaged encoder (``tuning``, the library the train_encoder job runs) once per variant:
    plain (heads on float features), ste (heads on the stored sign bits, straight-through), ste_mixed (both paths).
    Tuning truncates texts at 64 tokens (half the cost of 128 on 2 cores). Every variant but the opt-in ste_nokeep
    keeps the encoder general (keep_general: 1 - cos to the base features). Early stopping on the tuning tasks'
    validation splits.
 2. Encode every task's train/validation/test rows with each encoder through the pipeline's extractor (features as
    the default spec: last4 layers, mean, mean pooling, unit length; max_length 128), fp32 and binary (sign).
 3. Frozen-feature linear heads (scikit-learn logistic regression, C in {0.1, 1, 10} chosen on validation; one per
    label for goemotions) -> test accuracy (goemotions: micro-F1).
 4. Similarity: Spearman of cosine (fp32) and of -Hamming (binary) against senteval/sick_e relatedness (test pairs).
 5. Pooling table for the tuned encoder on the held-out tasks: layers x positions, fp32 and binary, bytes per text.
 6. Post-hoc help for the bits on the held-out tasks: zero thresholds vs per-dimension medians vs an ITQ rotation
    (Gong & Lazebnik 2011) fitted on a calibration sample of tuning-task texts.
Writes <out>/report.md, <out>/*.png and <out>/results.json (its "settings" hold the caps and recipe the run used);
prints each bar with its figure.
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

from study import (ALL_COMBOS, DEFAULT, HELD_OUT, QUICK, TUNE, VARIANTS, Recipe, StudyCaps, StudyData,  # noqa: E402
                   avg, binary, counts_line, encode, encode_groups, itq, load_study, probe, tune)

OUT = ROOT / "out" / "study"


def choose_setting(feats: dict, study: StudyData, cal: dict, caps: StudyCaps, say) -> dict:
    """The tuned encoder's 48-byte feature setting (layers x positions x thresholds: zero, or per-dimension medians
    of the calibration sample) chosen by the mean validation score of linear heads on the *tuning* tasks, as a user
    would choose the embed job's settings; then its test figures on the held-out and tuning tasks. Held-out tasks
    take no part in the choice."""
    rows, specs = study.rows, study.specs
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
                per[n] = probe(x, y, specs[n].kind == "multilabel", caps.c_grid, with_validation=True)
            table.append({"layers": combo[0], "positions": combo[1], "thresholds": thr,
                          "tuning_validation": float(np.mean([per[n][0] for n in TUNE])),
                          "held_out_test": float(np.mean([per[n][1] for n in HELD_OUT])),
                          "per_task_test": {n: per[n][1] for n in per}})
            say(f"  setting {combo[0]} / {combo[1]} / {thr}: tuning validation {table[-1]['tuning_validation']:.2f}"
                f", held-out test {table[-1]['held_out_test']:.2f}")
    best = max(table, key=lambda r: r["tuning_validation"])
    combo = (best["layers"], best["positions"])
    fp32 = {n: probe({sp: v[combo] for sp, v in feats[n].items()}, {sp: rows[n][sp][1] for sp in rows[n]},
                     specs[n].kind == "multilabel", caps.c_grid) for n in TUNE + HELD_OUT}
    say(f"  chosen on the tuning tasks' validation: {combo[0]} / {combo[1]} / {best['thresholds']} thresholds")
    return {"setting": f"{combo[0]} / {combo[1]} / {best['thresholds']} thresholds", "table": table,
            "accuracy": {n: {"fp32": fp32[n], "binary": best["per_task_test"][n]} for n in TUNE + HELD_OUT}}


# -- study ------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="max optimiser steps per tuning run (150; --quick: 4)")
    ap.add_argument("--texts-per-step", type=int, default=None, help="32; --quick: 8")
    ap.add_argument("--variants", default=None,
                    help="tuning runs (plain,ste,ste_mixed; --quick: ste_mixed): plain (float heads), ste (heads on "
                         "the bits), ste_mixed (both), ste_nokeep (ste without the keep-general term), ste_margin "
                         "(ste_mixed + the bit-margin term)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every row cap (2 = twice the rows)")
    ap.add_argument("--quick", action="store_true", help="smoke run: bench/study.py's QUICK caps, 4 steps, one "
                                                         "variant, out/study_quick (figures mean nothing)")
    ap.add_argument("--keep-general", type=float, default=1.0)
    ap.add_argument("--bit-margin", type=float, default=1.0, help="weight of the bit-margin term in ste_margin")
    ap.add_argument("--reuse", action="append", default=[], metavar="VARIANT=FOLDER",
                    help="evaluate a tuned encoder saved by an earlier run instead of tuning it (repeatable)")
    ap.add_argument("--out", default=None, help=f"report folder (default {OUT}, --quick: out/study_quick); tuned "
                                                "encoders go to its models/")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    q = args.quick
    args.steps = args.steps or (4 if q else 150)
    args.texts_per_step = args.texts_per_step or (8 if q else 32)
    args.variants = args.variants if args.variants is not None else ("ste_mixed" if q else "plain,ste,ste_mixed")
    args.out = args.out or str(ROOT / "out" / "study_quick" if q else OUT)
    bad = [v for v in args.variants.split(",") if v and v not in VARIANTS]
    if bad:
        ap.error(f"--variants: unknown {bad}; choose from {list(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out_dir = Path(args.out)
    caps = (QUICK if args.quick else StudyCaps()).scaled(args.scale)
    recipe = Recipe(steps=args.steps, texts_per_step=args.texts_per_step, keep_general=args.keep_general,
                    bit_margin=args.bit_margin)
    data = require_data()
    import torch
    from scipy.stats import spearmanr

    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
    from encoder.features import FeatureSettings
    from encoder.model import load_encoder

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        print(msg)

    # 1. tasks
    study = load_study(data, caps)
    rows, specs = study.rows, study.specs
    say(f"evaluation rows dropped because the tuning saw their text: {study.removed}")
    say(f"tasks loaded ({time.perf_counter() - t_start:.0f} s): {counts_line(rows)}")
    sick = study.sick
    assert sick is not None

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
        tuned, runs[variant] = tune(variant, recipe, caps, study, out_dir / "models", args.threads, say)
        models[variant] = tuned.model.eval()

    # the study's combinations come from the pipeline's extractor: check their derivation of the default one
    fx = FeatureExtractor(base, EncoderConfig(features=FeatureSettings(max_length=caps.max_length)))
    probe_texts = rows["senteval/mr"]["test"][0][:64]
    ours = encode(base.model, base.tokenizer, probe_texts, caps.max_length, ALL_COMBOS)[DEFAULT]
    assert np.allclose(ours, fx.features(probe_texts).values, atol=1e-5), "study features differ from the pipeline's"

    # 3. encode and probe
    tuned_names = [v for v in models if v != "base"]
    # "tuned" in the bars: the variant with the best mean validation score on the tuning tasks (never a held-out task)
    pool_variant = max(tuned_names, key=lambda v: np.nan_to_num(runs[v]["best_validation_mean"], nan=-1.0)) \
        if tuned_names else "base"
    results: dict = {"accuracy": {}, "pooling": {}, "similarity": {}, "thresholds": {}}
    calib = [t for n in TUNE for t in rows[n]["train"][0][:caps.calibration_per_task]]
    for name, model in models.items():
        t = time.perf_counter()
        combos = ALL_COMBOS if name == pool_variant else (DEFAULT,)
        groups = {(n, split): rows[n][split][0] for n in TUNE + HELD_OUT for split in rows[n]}
        got = encode_groups(model, base.tokenizer, groups | {"sick a": sick.a, "sick b": sick.b, "calibration": calib},
                            caps.max_length, combos)
        feats = {n: {split: got[(n, split)] for split in rows[n]} for n in TUNE + HELD_OUT}
        a, b = got["sick a"][DEFAULT], got["sick b"][DEFAULT]
        cal_all = got["calibration"]
        cal = cal_all[DEFAULT]
        say(f"\nencoded everything with '{name}' in {time.perf_counter() - t:.0f} s")
        ba, bb = binary(a), binary(b)
        results["similarity"][name] = {
            "fp32_cosine": float(spearmanr((a * b).sum(1), sick.relatedness)[0]),
            "binary_hamming": float(spearmanr(-(ba != bb).sum(1), sick.relatedness)[0])}
        say(f"  sick relatedness Spearman: cosine {results['similarity'][name]['fp32_cosine']:.3f}, "
            f"hamming {results['similarity'][name]['binary_hamming']:.3f}")
        acc = {}
        med = np.median(cal, axis=0).astype(np.float32)
        rot = itq(cal)
        for n in TUNE + HELD_OUT:
            ml = specs[n].kind == "multilabel"
            y = {sp: rows[n][sp][1] for sp in rows[n]}
            x = {sp: feats[n][sp][DEFAULT] for sp in feats[n]}
            acc[n] = {"fp32": probe(x, y, ml, caps.c_grid),
                      "binary": probe({k: binary(v) for k, v in x.items()}, y, ml, caps.c_grid)}
            if n in HELD_OUT:
                results["thresholds"].setdefault(name, {})[n] = {
                    "zero": acc[n]["binary"],
                    "median": probe({k: binary(v, med) for k, v in x.items()}, y, ml, caps.c_grid),
                    "itq": probe({k: binary(v, rotation=rot) for k, v in x.items()}, y, ml, caps.c_grid)}
            say(f"  {n:28s} fp32 {acc[n]['fp32']:5.1f}  binary {acc[n]['binary']:5.1f}")
        results["accuracy"][name] = acc
        if name == pool_variant:
            for combo in ALL_COMBOS:
                per = {}
                for n in HELD_OUT:
                    x = {sp: feats[n][sp][combo] for sp in feats[n]}
                    y = {sp: rows[n][sp][1] for sp in rows[n]}
                    per[n] = {"fp32": probe(x, y, False, caps.c_grid),
                              "binary": probe({k: binary(v) for k, v in x.items()}, y, False, caps.c_grid)}
                dim = next(iter(feats[HELD_OUT[0]].values()))[combo].shape[1]
                results["pooling"][f"{combo[0]} / {combo[1]}"] = {
                    "fp32": float(np.mean([v["fp32"] for v in per.values()])),
                    "binary": float(np.mean([v["binary"] for v in per.values()])),
                    "fp32_bytes": dim * 4, "binary_bytes": dim // 8}
            results["chosen"] = choose_setting(feats, study, cal_all, caps, say)
        del feats, got
    results["runs"] = runs
    results["pool_variant"] = pool_variant
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["removed_seen_texts"] = study.removed
    results["command"] = " ".join(["python bench/transfer.py", *(sys.argv[1:] if argv is None else argv)])
    results["settings"] = vars(args) | {"caps": caps.to_json(), "recipe": recipe.to_json(),
                                        "sick_pairs_used": len(sick.relatedness)}
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report(results, tuned_names, say, out_dir)


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


def mean(results: dict, model: str, kind: str, tasks: list[str]) -> float:
    return avg(results["accuracy"][model], kind, tasks)


def report(results: dict, tuned: list[str], say, out: Path = OUT) -> None:
    """Bars, tables and charts from results.json into ``out`` (also usable alone: python -c 'from transfer import
    ...')."""
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
             f"`{results.get('command', 'python bench/transfer.py')}` ({results['seconds'] / 60:.0f} minutes on 2 "
             "CPU cores; settings: "
             f"`{json.dumps(results['settings'], default=str)}`). Tuned = variant `{main_v}` (the best mean "
             "validation score on the tuning tasks) unless a column says otherwise. Linear heads on frozen features "
             "(logistic regression, C chosen on validation), test "
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
    lines += ["", "## Tuning runs", "", "| variant | best step | steps | validation mean | seconds |",
              "|---|---|---|---|---|"]
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
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

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
    fig.savefig(out / "accuracy_vs_bytes.png", dpi=120)
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
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
    say(f"\nwrote {out / 'report.md'} and charts")


if __name__ == "__main__":
    main()
