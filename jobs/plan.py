"""Shared encoder or one model per task? The cost of both paths for your numbers, and the crossover N*.

    python -m jobs.plan --tasks 12 --texts-per-day 5e6 --mean-tokens 60 [--backend torch|onnx|onnx_int8]
        [--device cpu|gpu] [--costs docs/costs.json] [--json]

Seconds come from the per-text costs measured on this project's reference machine (``docs/costs.json``, written by
``bench/costs.py --write``; re-measure on your hardware and pass ``--costs``); FLOPs are counted from the
architectures. Prints the cost per day of the shared path (one encoder pass + N heads on the stored codes) and of N
per-task students (and, as the upper bound, N per-task teachers), N* for seconds and for FLOPs, the shared encoder
pass's cost per 1M texts, and the storage per day for each quantization. ``--backend`` prices every encoder path (the
shared one and the per-task models alike) at that encoder backend's measured seconds. No Spark.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planning.costs import CostModel, Plan, plan

DEFAULT_COSTS = Path(__file__).resolve().parent.parent / "docs" / "costs.json"


def _human(x: float, unit: str) -> str:
    for k, s in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= k:
            return f"{x / k:,.2f} {s}{unit}"
    return f"{x:,.2f} {unit}"


def per_million(p: Plan, model: CostModel) -> str:
    """The shared encoder pass over 1M texts: wall seconds on the measured machine, and CPU-hours (wall hours x the
    threads it was measured with), the figure to compare backends and machines by."""
    s = p.encoder_seconds_per_million
    threads = model.threads()
    cpu_h = f" = {s * threads / 3600:,.2f} CPU-hours ({threads} threads)" if threads else ""
    return (f"cost per 1M texts (shared encoder pass, {p.tokens:g} tokens, backend {p.backend}): {s:,.0f} s = "
            f"{s / 3600:,.2f} hours{cpu_h}")


def render(p: Plan, model: CostModel, device: str) -> str:
    arch = model.architectures
    lines = [f"{p.tasks} tasks, {p.texts:,.0f} texts/day of {p.tokens:g} tokens on average, device {device}, "
             f"backend {p.backend} "
             f"(costs measured: {model.measured.get('date', '?')}, {model.measured.get('machine', '?')})", "",
             f"{'path':<44} {'seconds/day':>12} {'hours/day':>10} {'FLOPs/day':>14}"]
    names = {"shared": f"shared encoder ({arch['shared'].layers} layers) + {p.tasks} heads",
             "student": f"{p.tasks} per-task students ({arch['student'].layers} layers)",
             "teacher": f"{p.tasks} per-task teachers ({arch['teacher'].layers} layers)"}
    for k in ("shared", "student", "teacher"):
        lines.append(f"{names[k]:<44} {p.seconds[k]:>12,.0f} {p.seconds[k] / 3600:>10,.2f} "
                     f"{_human(p.flops[k], 'FLOP'):>14}")
    cs, cf = p.crossover_seconds, p.crossover_flops
    lines += ["", f"crossover N* (seconds): {cs if cs is not None else 'never'}   "
                  f"crossover N* (FLOPs): {cf if cf is not None else 'never'}   "
                  f"(shared is cheaper from N* tasks on; student/base size ratio "
                  f"{arch['student'].layers}/{arch['shared'].layers} layers)",
              "", per_million(p, model),
              "", "storage per day (codes only): " + ", ".join(
                  f"{q} {_human(b, 'B')}" for q, b in p.storage_bytes.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="jobs.plan", description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, required=True, help="number of tasks (heads / per-task models)")
    ap.add_argument("--texts-per-day", type=float, required=True)
    ap.add_argument("--mean-tokens", type=float, required=True, help="mean tokens per text, special tokens included")
    ap.add_argument("--device", default="cpu", help="a device the costs file has (cpu, gpu)")
    ap.add_argument("--backend", default="torch", metavar="torch|onnx|onnx_int8",
                    help="the encoder backend (encoder.backend) every encoder path is priced at (default torch); one "
                         "the costs file has measured")
    ap.add_argument("--costs", default=str(DEFAULT_COSTS), help="measured costs (bench/costs.py --write)")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    a = ap.parse_args(argv)
    if not Path(a.costs).is_file():
        print(f"jobs.plan: no measured costs at {a.costs}; measure them on this machine with "
              "python bench/costs.py --write (about 7 minutes)", file=sys.stderr)
        return 2
    try:
        model = CostModel.load(a.costs)
        p = plan(model, a.device, a.tasks, a.texts_per_day, a.mean_tokens, backend=a.backend)
    except (OSError, ValueError, KeyError) as exc:
        print(f"jobs.plan: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(p), indent=2) if a.json else render(p, model, a.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
