"""GPU encode benchmark, prepared to the last command for a device that has PyTorch and transformers but no Java, no
pyspark, no model package and no network.

    python bench/gpu_encode.py pack [--out out/gpu_pack] [--texts 2400] [--timing-texts 48000]     # here, on CPU
    python3 bench/gpu_encode.py run --pack out/gpu_pack --device cuda --out $OUT/gpu.json           # on the device

``pack`` rounds the packaged all-MiniLM-L6-v2 to fp16 (a ~45 MB model folder: what travels fits the device's 64 MiB),
loads that folder back in fp32 and computes the CPU reference through the library's own extractor (the default spec)
on real mixed texts from ../shared/data; it stores the texts, their binary codes and fp32 features. ``run`` loads the
pack's model with the library's loader (fp32 weights, SDPA attention), times ``FeatureExtractor.features`` at the GPU
token budget under each precision (fp32, fp16 and bf16 autocast: the library's GPU path) and counts the sign bits that
differ from the CPU reference made from the same fp16-rounded weights; it writes one JSON (docs/gpu.md).

Only torch, transformers, numpy, pyarrow, safetensors and the encoder library are imported on the ``run`` path.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT  # noqa: E402  (project importable, offline env, line-buffered stdout)

PRECISIONS = {"fp32": "none", "fp16": "fp16", "bf16": "bf16"}   # name -> the library's EncoderConfig.autocast
PACK_FORMAT = 1
MODEL_DIR, REFERENCE, TIMING, PACK_JSON = "model", "reference.parquet", "timing.parquet", "pack.json"
DEVICE_LIMIT = 64 * 2**20      # what travels to the device: working tree + carried paths
PACK_LIMIT = 60 * 2**20        # the pack alone; the rest is left to the working tree
DEFAULT_PACK = "out/gpu_pack"
MiB = 2**20


class PackError(Exception):
    """The pack (or the device) cannot serve this run; the message is the one line the user sees."""


# -- shared by pack and run ---------------------------------------------------------------------------------------
def use_sdpa(model: Any) -> str:
    """Switch attention to PyTorch's scaled_dot_product_attention and return what the model now uses. Batches are one
    length (no padding), so the mask is all ones and SDPA may take its fused kernels."""
    if hasattr(model, "set_attn_implementation"):          # transformers >= 4.5x and 5.x
        model.set_attn_implementation("sdpa")
    else:  # pragma: no cover - older transformers choose the attention class at build time (sdpa by default)
        model.config._attn_implementation = "sdpa"
    return str(getattr(model.config, "_attn_implementation", "unknown"))


def load_pack_model(folder: Path, device: str) -> Any:
    """The library's loader on a local folder, then fp32 weights: transformers 5 keeps an fp16 file's dtype, but the
    library's GPU path is fp32 weights under autocast (and its CPU path plain fp32). The fp16-rounded values survive
    the cast exactly, so CPU reference and device runs start from identical weights."""
    from encoder.model import load_encoder

    loaded = load_encoder(str(folder), device=device)
    loaded.model = loaded.model.float()
    attn = use_sdpa(loaded.model)
    if attn != "sdpa":
        raise PackError(f"attention is {attn!r} after asking for 'sdpa' (transformers too old?)")
    return loaded


def extractor(loaded: Any, precision: str, gpu_token_budget: int = 65536) -> Any:
    """The library's extractor under the default spec, with this precision's autocast and the GPU token budget (on
    CPU the extractor itself turns autocast off and uses the CPU budget)."""
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig

    fx = FeatureExtractor(loaded, EncoderConfig(autocast=PRECISIONS[precision], gpu_token_budget=gpu_token_budget))
    backend = getattr(fx.settings, "backend", "torch")
    if backend != "torch":
        raise PackError(f"the default spec's backend is {backend!r}; this benchmark times the torch backend")
    return fx


def versions() -> dict[str, str]:
    """Library versions that decide the numbers."""
    import numpy as np
    import pyarrow as pa
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "pyarrow": pa.__version__, "cuda": str(torch.version.cuda),
            "cudnn": str(torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)}


def token_stats(fx: Any, texts: Sequence[str]) -> dict[str, Any]:
    """Token lengths of the unique texts and how the extractor batches them (rows and tokens per batch, and how
    full the token budget gets): a GPU is only busy when same-length batches are large."""
    import numpy as np

    from encoder.batching import plan_batches, unique_texts

    uniq, _ = unique_texts(texts)
    ids, counts = fx.tokenize(uniq)
    lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
    batches = plan_batches(lengths, fx.token_budget, fx.max_batch_rows)
    rows = np.array([len(b) for b in batches])
    tokens = np.array([int(lengths[b].sum()) for b in batches])
    return {"texts": len(texts), "unique": len(uniq), "tokens": int(lengths.sum()),
            "median": int(np.median(lengths)), "p95": int(np.percentile(lengths, 95)), "max": int(lengths.max()),
            "truncated": int((counts > fx.settings.max_length).sum()), "token_budget": int(fx.token_budget),
            "max_batch_rows": int(fx.max_batch_rows), "batches": len(batches),
            "rows_per_batch_mean": round(float(rows.mean()), 1), "tokens_per_batch_mean": round(float(tokens.mean())),
            "budget_fill_mean": round(float(tokens.mean()) / fx.token_budget, 4)}


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -- pack ---------------------------------------------------------------------------------------------------------
def make_pack(model: str | Path, texts: Sequence[str], out: str | Path, timing_texts: Sequence[str] = (),
              sets: dict[str, int] | None = None) -> dict[str, Any]:
    """Write a pack: ``model`` (a folder, or 'package') rounded to fp16 as a model folder, the CPU fp32 reference of
    ``texts`` from those rounded weights (binary codes and fp32 features), and ``timing_texts`` (no reference:
    timed on the device only, so its same-length batches get large). Built beside ``out`` and moved in place at the
    end, with pack.json written last, so a half-made pack is never taken for one. Returns pack.json's content."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from safetensors import safe_open

    from encoder.model import load_encoder, save_model_folder
    from encoder.quantize import codes_to_column, quantize

    if not texts:
        raise PackError("a pack needs at least one reference text")
    out = Path(out)
    if out.exists() and not (out / PACK_JSON).is_file() and any(out.iterdir()):
        raise PackError(f"{out} exists and is not a pack (no {PACK_JSON}); choose another --out")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)

    base = load_encoder(str(model), device="cpu")
    lineage = {"name": f"{base.fingerprint['name']}-fp16", "base_model": base.fingerprint,
               "made_by": "bench/gpu_encode.py pack", "weights": "the base model's weights rounded to float16"}
    fp16 = save_model_folder(partial / MODEL_DIR, base.model.half(), base.tokenizer, lineage)
    with safe_open(str(partial / MODEL_DIR / "model.safetensors"), framework="pt") as st:
        dtypes = {st.get_slice(k).get_dtype() for k in st.keys()}
    if dtypes != {"F16"}:
        raise PackError(f"the packed weights are {sorted(dtypes)}, expected F16 only")
    del base

    loaded = load_pack_model(partial / MODEL_DIR, "cpu")
    fx = extractor(loaded, "fp32")
    t0 = dt.datetime.now(dt.timezone.utc)
    feats = fx.features(list(texts))
    seconds = (dt.datetime.now(dt.timezone.utc) - t0).total_seconds()
    pq.write_table(pa.table({
        "text": pa.array(list(texts), pa.string()),
        "n_tokens": pa.array(feats.n_tokens, pa.int32()),
        "truncated": pa.array(feats.truncated, pa.bool_()),
        "code": codes_to_column(quantize(feats.values, "binary")),       # the one quantizer, default spec
        "feature": codes_to_column(quantize(feats.values, "fp32")),      # little-endian float32, to measure |diff|
    }), partial / REFERENCE, compression="zstd")
    pq.write_table(pa.table({"text": pa.array(list(timing_texts), pa.string())}), partial / TIMING,
                   compression="zstd")

    files = {str(f.relative_to(partial)): f.stat().st_size for f in sorted(partial.rglob("*")) if f.is_file()}
    total = sum(files.values())
    if total > PACK_LIMIT:
        raise PackError(f"the pack is {total / MiB:.1f} MiB, over {PACK_LIMIT / MiB:.0f} MiB (the device takes "
                        f"{DEVICE_LIMIT / MiB:.0f} MiB with the working tree); use fewer --texts/--timing-texts")
    info = {"format": PACK_FORMAT, "made_at": t0.isoformat(timespec="seconds"), "made_by": "bench/gpu_encode.py pack",
            "model": fp16, "base_model": lineage["base_model"], "features": fx.feature_part(), "dim": int(fx.dim),
            "code_bytes": int(quantize(feats.values[:1], "binary").shape[1]),
            "reference": {"texts": len(texts), "device": "cpu", "precision": "fp32", "threads": torch.get_num_threads(),
                          "seconds": round(seconds, 2), "texts_per_s": round(len(texts) / seconds, 1),
                          "tokens": token_stats(fx, texts)},
            "timing_texts": len(timing_texts), "sets": sets or {}, "versions": versions(), "files": files,
            "total_bytes": total}
    (partial / PACK_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return info


def read_sets(n_reference: int, n_timing: int) -> tuple[list[str], list[str], dict[str, dict[str, int]]]:
    """bench/encode.py's mixed sets (short tweets to long blog posts), an equal share of each count per set (a small
    set gives what it has): per set, the first rows by the project's id hash are reference texts, the rows after
    them timing texts."""
    import numpy as np
    import pyarrow.parquet as pq

    from _setup import require_data
    from encode import SETS   # bench/encode.py: its set list, imported lazily (pack only; never on the device)
    from encoder.hashing import id_hash

    data = require_data()
    ref_per, timing_per = -(-n_reference // len(SETS)), -(-n_timing // len(SETS))
    reference, timing, sets = [], [], {}
    for s in SETS:
        table = pq.read_table(data / f"{s}.parquet", columns=["id", "text"])
        order = np.argsort(id_hash(table.column("id").to_pylist()), kind="stable")
        rows = table.column("text").take(order[:ref_per + timing_per]).to_pylist()
        texts = [t for t in rows if t]
        reference += texts[:ref_per]
        timing += texts[ref_per:]
        sets[s] = {"reference": len(texts[:ref_per]), "timing": len(texts[ref_per:])}
    return reference[:n_reference], timing[:n_timing], sets


def travelling_bytes() -> tuple[int, list[tuple[int, str]]]:
    """What the device tool sends besides carried paths: tracked and untracked-not-ignored files (-> bytes, the
    largest three). Zero when git cannot tell."""
    try:
        names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return 0, []
    sizes = []
    for name in filter(None, names):
        f = ROOT / os.fsdecode(name)
        if f.is_file():
            sizes.append((f.stat().st_size, os.fsdecode(name)))
    return sum(s for s, _ in sizes), sorted(sizes, reverse=True)[:3]


def cmd_pack(args: argparse.Namespace) -> int:
    """The CLI's pack: real texts from ../shared/data and the packaged model."""
    reference, timing, sets = read_sets(args.texts, args.timing_texts)
    out = Path(args.out)
    print(f"pack: {len(reference)} reference texts (CPU fp32 reference computed here) + {len(timing)} timing texts "
          f"from {len(sets)} sets -> {out}")
    info = make_pack("package", reference, out, timing, sets={k: v["reference"] + v["timing"] for k, v in sets.items()})
    ref = info["reference"]
    print(f"model {info['model']['name']} ({info['model']['sha256'][:12]}), fp16 weights; reference: "
          f"{ref['texts']} texts in {ref['seconds']:.1f} s ({ref['texts_per_s']:.0f} texts/s, {ref['threads']} "
          f"threads); tokens median {ref['tokens']['median']}, p95 {ref['tokens']['p95']}, max {ref['tokens']['max']}")
    for name, size in info["files"].items():
        print(f"  {size / MiB:8.2f} MiB  {out / name}")
    pack_mib = info["total_bytes"] / MiB
    tree, largest = travelling_bytes()
    total = (tree + info["total_bytes"]) / MiB
    print(f"pack {pack_mib:.2f} MiB; with the working tree ({tree / MiB:.2f} MiB) {total:.2f} MiB of the device's "
          f"{DEVICE_LIMIT / MiB:.0f} MiB")
    if tree + info["total_bytes"] > DEVICE_LIMIT:
        print(f"WARNING: over the device limit; the largest files that would travel: "
              f"{', '.join(f'{n} ({s / MiB:.1f} MiB)' for s, n in largest)} (ignore or remove them before the run)")
    try:
        rel = out.resolve().relative_to(ROOT)
    except ValueError:
        print(f"WARNING: {out} is outside the repository; the device tool carries paths inside it only")
        rel = out
    print("device run (docs/gpu.md):")
    print(f'  carry ["{rel}"]')
    print(f"  command: PYTHONUNBUFFERED=1 python3 bench/gpu_encode.py run --pack {rel} --device cuda "
          "--out $OUT/gpu.json")
    return 0


# -- run ----------------------------------------------------------------------------------------------------------
def check_pack(pack: Path) -> dict[str, Any]:
    """pack.json, the model folder and both tables present and readable, before anything heavy is imported."""
    if not pack.is_dir():
        raise PackError(f"no pack at {pack} (make it with: make gpu-pack, then carry it to the device)")
    meta = pack / PACK_JSON
    missing = [n for n in (PACK_JSON, f"{MODEL_DIR}/model.safetensors", f"{MODEL_DIR}/config.json", REFERENCE,
                           TIMING) if not (pack / n).is_file()]
    if missing:
        raise PackError(f"pack {pack} is incomplete: missing {', '.join(missing)} (make gpu-pack again; carry the "
                        "whole folder)")
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackError(f"{meta} is not valid JSON ({exc}); make gpu-pack again") from None
    if not isinstance(info, dict) or info.get("format") != PACK_FORMAT:
        raise PackError(f"{meta} is not a pack of format {PACK_FORMAT}; make gpu-pack again")
    for name, size in info.get("files", {}).items():
        f = pack / name
        if not f.is_file() or f.stat().st_size != size:
            raise PackError(f"pack {pack} is incomplete: {name} is "
                            f"{'missing' if not f.is_file() else f'{f.stat().st_size} bytes, not {size}'}")
    return info


def read_reference(pack: Path, dim: int, code_bytes: int) -> dict[str, Any]:
    """The reference texts, token counts, binary codes and float32 features; the timing texts."""
    import pyarrow.parquet as pq

    from encoder.quantize import codes_from_column, dequantize

    t = pq.read_table(pack / REFERENCE)
    return {"texts": t.column("text").to_pylist(), "n_tokens": t.column("n_tokens").to_numpy(),
            "codes": codes_from_column(t.column("code"), code_bytes),
            "features": dequantize(codes_from_column(t.column("feature"), dim * 4), dim, "fp32"),
            "timing": pq.read_table(pack / TIMING).column("text").to_pylist()}


def device_info(device: str) -> dict[str, Any]:
    import torch

    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        return {"device": device, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
                "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                "float32_matmul_precision": torch.get_float32_matmul_precision()}
    return {"device": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "cores": os.cpu_count()}


def cmd_run(args: argparse.Namespace) -> int:
    """Time the extractor per precision on the pack's texts and compare its sign bits with the CPU reference."""
    pack = Path(args.pack)
    info = check_pack(pack)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise PackError(f"--precisions {args.precisions!r}: expected names from {', '.join(PRECISIONS)}")
    import numpy as np
    import torch

    from timing import compare          # bench/timing.py: warm-up, interleaved repeats, medians (stdlib only)

    from encoder.batching import unique_texts
    from encoder.quantize import quantize

    on_cuda = args.device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        raise PackError(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    workload = args.workload or ("all" if on_cuda else "reference")
    loaded = load_pack_model(pack / MODEL_DIR, args.device)
    if loaded.fingerprint["sha256"] != info["model"]["sha256"]:
        raise PackError(f"pack {pack}: the model folder's fingerprint {loaded.fingerprint['sha256'][:12]} is not "
                        f"pack.json's {info['model']['sha256'][:12]}; make gpu-pack again")
    ref = read_reference(pack, int(info["dim"]), int(info["code_bytes"]))
    texts = ref["texts"] + (ref["timing"] if workload == "all" else [])
    n_ref = len(ref["texts"])
    fxs = {p: extractor(loaded, p, args.token_budget) for p in precisions}
    first = fxs[precisions[0]]
    if first.feature_part() != info["features"]:
        raise PackError("the pack was made under other feature settings than this code's default spec; make gpu-pack "
                        "again")

    stats = token_stats(first, texts)
    _, ref_counts = first.tokenize(ref["texts"])
    token_mismatch = int((ref_counts != ref["n_tokens"]).sum())

    def timed(fx: Any) -> Any:
        values = fx.features(texts).values
        if on_cuda:
            torch.cuda.synchronize()
        return values

    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    uniq, _ = unique_texts(texts)      # what features() tokenises: duplicates folded first
    tok = compare({"tokenize": lambda: first.tokenize(uniq)}, args.repeats, warmup=0)
    t = compare({p: (lambda fx=fx: timed(fx)) for p, fx in fxs.items()}, args.repeats, warmup=1)
    results = {}
    for p in precisions:
        values = t.results[p][:n_ref]
        bits = quantize(values, "binary")
        flips = np.unpackbits(bits ^ ref["codes"], axis=1)
        cos = (values * ref["features"]).sum(axis=1) / np.maximum(
            np.linalg.norm(values, axis=1) * np.linalg.norm(ref["features"], axis=1), 1e-12)
        median = t.median(p)
        effective = fxs[p].autocast if on_cuda else "none"
        results[p] = {
            "autocast": effective, "computes_in": {"none": "fp32", "fp16": "fp16", "bf16": "bf16"}[effective],
            "seconds": [round(s, 4) for s in t.seconds[p]], "median_s": round(median, 4),
            "texts_per_s": round(len(texts) / median, 1), "tokens_per_s": round(stats["tokens"] / median),
            "texts_per_s_without_tokenize": round(len(texts) / max(median - tok.median("tokenize"), 1e-9), 1),
            "bits_differing": int(flips.sum()), "bits_compared": int(flips.size),
            "share_bits_differing": float(flips.mean()), "rows_with_a_flip": int(flips.any(axis=1).sum()),
            "max_abs_feature_diff": float(np.abs(values - ref["features"]).max()),
            "min_cosine_to_reference": float(cos.min())}
    report = {
        "what": "texts/s of encoder.encode.FeatureExtractor.features (default spec) per precision, and sign bits "
                "differing from the CPU fp32 reference made from the same fp16-rounded weights",
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(args.device), "versions": versions(), "attention": use_sdpa(loaded.model),
        "weights": "fp16-rounded, loaded as fp32 (autocast decides the compute precision)",
        "model": info["model"], "features": info["features"], "pack_made_at": info["made_at"],
        "pack_versions": info["versions"], "workload": workload, "texts": len(texts), "reference_texts": n_ref,
        "repeats": args.repeats, "warmup": "one untimed full pass per precision; precisions interleaved per repeat",
        "token_budget_requested": args.token_budget, "tokens": stats,
        "tokenize_s_median": round(tok.median("tokenize"), 4), "reference_token_count_mismatches": token_mismatch,
        "cpu_reference": info["reference"],
        "precisions": results,
        "note": None if on_cuda else "CPU: the library turns autocast off, so fp16 and bf16 run fp32 here (a dry run "
                                     "of the whole path; the CPU token budget applies)",
    }
    if on_cuda:
        report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    d = report["device"]
    print(f"{d['name']} ({args.device}); torch {report['versions']['torch']}, transformers "
          f"{report['versions']['transformers']}; attention {report['attention']}; {len(texts)} texts ({workload}), "
          f"{stats['tokens']} tokens, budget {stats['token_budget']}, {stats['batches']} batches of "
          f"{stats['rows_per_batch_mean']} rows mean; tokenize {tok.median('tokenize'):.2f} s")
    print(f"{'precision':<10}{'computes':<10}{'texts/s':>10}{'no-tokenize':>12}{'bits differing':>24}{'max|diff|':>11}")
    for p, r in results.items():
        print(f"{p:<10}{r['computes_in']:<10}{r['texts_per_s']:>10.0f}{r['texts_per_s_without_tokenize']:>12.0f}"
              f"{r['bits_differing']:>9} of {r['bits_compared']:<8} {r['share_bits_differing']:>8.5%}"
              f"{r['max_abs_feature_diff']:>11.1e}")
    if token_mismatch:
        print(f"WARNING: {token_mismatch} reference texts tokenise to another length than in the pack")
    if report["note"]:
        print(report["note"])
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here, on CPU: fp16 model folder + texts + CPU reference codes")
    p.add_argument("--out", default=DEFAULT_PACK)
    p.add_argument("--texts", type=int, default=2400, help="reference texts (CPU reference computed for these)")
    p.add_argument("--timing-texts", type=int, default=48000, help="further texts timed on the device only")
    r = sub.add_parser("run", help="on the device: texts/s per precision and sign bits against the reference")
    r.add_argument("--pack", default=DEFAULT_PACK)
    r.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (a dry run: fp32 only, see the JSON's note)")
    r.add_argument("--out", required=True, help="the JSON file to write")
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--token-budget", type=int, default=65536, help="tokens per GPU batch (EncoderConfig's default)")
    r.add_argument("--precisions", default="fp32,fp16,bf16")
    r.add_argument("--workload", choices=("reference", "all"), default=None,
                   help="texts timed: the reference texts, or all (+ timing texts); default all on cuda, reference "
                        "on cpu")
    args = ap.parse_args(argv)
    if getattr(args, "repeats", 1) < 1 or getattr(args, "token_budget", 1) < 1 or getattr(args, "texts", 1) < 1 \
            or getattr(args, "timing_texts", 0) < 0:
        print("gpu_encode.py: --repeats, --token-budget and --texts must be >= 1, --timing-texts >= 0",
              file=sys.stderr)
        return 2
    try:
        return cmd_pack(args) if args.command == "pack" else cmd_run(args)
    except Exception as exc:
        from encoder.typed_config import ConfigError, first_line   # late: the pack checks run before torch loads

        if not isinstance(exc, (PackError, ConfigError)):   # ModelError is a ConfigError: a bad model folder
            raise
        print(f"gpu_encode.py: {first_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
