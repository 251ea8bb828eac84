"""The cost of serving N tasks: one shared encoder pass + N heads on stored codes, against N per-task models.

Seconds come from measured per-text costs (``docs/costs.json``, re-measured by ``bench/costs.py --write``):
an encoder pass over a text of t tokens costs a + b·t + c·t² seconds (attention is quadratic in t), fitted on this
machine at several lengths, for each encoder backend measured (``encoder.backend``: torch, onnx, onnx_int8); a head on
a stored code costs a fixed time per text; each job run pays fixed seconds (Spark session, model load, publication).
FLOPs are counted from the architectures (``planning.flops``); a backend changes the seconds, never the FLOPs.
The crossover N* is the smallest N at which the shared path is no dearer: E + N·H <= N·S, so N* = ceil(E / (S - H)).

Costs file (``format_version`` 1): ``devices.<device>.seconds_per_text`` holds torch's coefficients (where they have
always been, so a file written before the backends existed still plans for torch, and an older reader still reads a
newer file); ``devices.<device>.backends.<backend>.seconds_per_text`` holds each other measured backend's.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .flops import Architecture, encoder_flops, head_flops
from encoder.quantize import QUANTIZATIONS, code_bytes

PATHS = ("shared", "student", "teacher")
FORMAT_VERSIONS = (1,)
MEASURE = "python bench/costs.py --write"
Coefficients = dict[str, tuple[float, float, float]]     # path -> (a, b, c): a + b·t + c·t² seconds per text


@dataclass(frozen=True)
class DeviceCosts:
    seconds_per_text: Coefficients                  # torch's
    head_seconds_per_text: float                    # one head on one stored code (the backend does not run heads)
    fixed_seconds: dict[str, float]                 # per job run: embed, apply
    backends: dict[str, Coefficients] = field(default_factory=dict)   # the other measured backends' coefficients

    def measured_backends(self) -> tuple[str, ...]:
        return ("torch", *sorted(self.backends))

    def coefficients(self, backend: str = "torch") -> Coefficients:
        if backend == "torch":
            return self.seconds_per_text
        return self.backends[backend]

    def encoder_seconds(self, path: str, tokens: float, backend: str = "torch") -> float:
        a, b, c = self.coefficients(backend)[path]
        return a + b * tokens + c * tokens * tokens


def _coefficients(d: dict, where: str) -> Coefficients:
    try:
        out = {p: tuple(float(x) for x in d[p]) for p in PATHS}
    except KeyError as exc:
        raise ValueError(f"{where} lacks {exc.args[0]!r} (expected {list(PATHS)})") from None
    bad = [p for p, v in out.items() if len(v) != 3]
    if bad:
        raise ValueError(f"{where}.{bad[0]}: expected 3 coefficients (a, b, c), got {len(out[bad[0]])}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class CostModel:
    architectures: dict[str, Architecture]
    devices: dict[str, DeviceCosts]
    dim: int
    measured: dict

    @classmethod
    def load(cls, path: str | Path) -> "CostModel":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), str(path))

    @classmethod
    def from_dict(cls, d: dict, path: str = "costs") -> "CostModel":
        version = d.get("format_version", 1)
        if version not in FORMAT_VERSIONS:
            raise ValueError(f"{path}: format_version = {version!r}; this planner reads {list(FORMAT_VERSIONS)} "
                             f"(re-measure with {MEASURE})")
        archs = {k: Architecture(**v) for k, v in d["architectures"].items()}
        missing = [p for p in PATHS if p not in archs]
        if missing:
            raise ValueError(f"{path}: architectures lacks {missing}")
        devices = {}
        for k, v in d["devices"].items():
            where = f"{path}: devices.{k}"
            backends = {}
            for b, bv in v.get("backends", {}).items():
                if b == "torch":
                    raise ValueError(f"{where}.backends.torch: torch's costs are devices.{k}.seconds_per_text; "
                                     "backends holds the others (onnx, onnx_int8)")
                backends[b] = _coefficients(bv["seconds_per_text"], f"{where}.backends.{b}.seconds_per_text")
            devices[k] = DeviceCosts(_coefficients(v["seconds_per_text"], f"{where}.seconds_per_text"),
                                     float(v["head_seconds_per_text"]), dict(v["fixed_seconds"]), backends)
        return cls(archs, devices, int(d["dim"]), d.get("measured", {}))

    def device(self, name: str) -> DeviceCosts:
        if name not in self.devices:
            raise ValueError(f"no costs measured for device {name!r} (measured: {sorted(self.devices)}); run "
                             f"bench/costs.py --write on such a machine")
        return self.devices[name]

    def threads(self) -> int | None:
        """CPU threads the costs were measured with (``measured.threads``; older files name them in ``machine``)."""
        if "threads" in self.measured:
            return int(self.measured["threads"])
        m = re.search(r"(\d+) CPU threads", str(self.measured.get("machine", "")))
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Plan:
    """Per day (or per any batch of texts): seconds and FLOPs of each path, the crossovers, storage."""

    tasks: int
    texts: float
    tokens: float                      # mean tokens per text
    seconds: dict[str, float]          # shared (encoder + heads), student (N models), teacher (N models)
    flops: dict[str, float]
    crossover_seconds: int | None      # N*: smallest N where shared <= per-task students (None: never)
    crossover_flops: int | None
    storage_bytes: dict[str, float]    # per quantization: the codes of one day's texts
    backend: str = "torch"             # the encoder backend whose seconds every encoder path was priced at
    encoder_seconds_per_million: float = 0.0   # the shared encoder pass alone over 1M such texts (no fixed costs)


def plan(model: CostModel, device: str, tasks: int, texts: float, tokens: float | np.ndarray,
         head_outputs: int = 4, backend: str = "torch") -> Plan:
    """Cost of serving ``tasks`` tasks on ``texts`` texts of ``tokens`` tokens (special tokens included): one mean
    count, or a sample of counts standing for the length distribution (attention makes cost per text convex in
    length, so a distribution costs more than its mean).

    ``backend`` prices every encoder path (shared, student, teacher) at that backend's measured seconds: a per-task
    model could be exported to the same runtime, so the crossover compares like with like (a faster backend shrinks
    E and S alike, and N* moves only through the heads and the fixed seconds). FLOPs do not depend on it. The planner
    prices whichever backends the costs file measured; any other name is refused, naming those and the command that
    measures them."""
    t = np.atleast_1d(np.asarray(tokens, dtype=np.float64))
    if tasks < 1 or texts <= 0 or t.size == 0 or t.min() < 3:
        raise ValueError(f"tasks={tasks}, texts={texts}, tokens={t.min() if t.size else 'none'}: expected tasks >= 1, "
                         "texts > 0, tokens >= 3")
    dev = model.device(device)
    if backend not in dev.measured_backends():
        cpu_only = "" if device == "cpu" else " (onnx and onnx_int8 run on the CPU only)"
        raise ValueError(f"no {device} costs measured for backend {backend!r} (measured: "
                         f"{list(dev.measured_backends())}){cpu_only}; measure every backend with {MEASURE}")

    def per_text(path: str) -> float:
        return float(np.mean(dev.encoder_seconds(path, t, backend)))  # type: ignore[arg-type]

    def per_text_flops(path: str) -> float:
        return encoder_flops(model.architectures[path], t) / t.size

    enc = texts * per_text("shared")
    heads = texts * dev.head_seconds_per_text
    student = texts * per_text("student")
    teacher = texts * per_text("teacher")
    seconds = {"shared": dev.fixed_seconds["embed"] + enc + dev.fixed_seconds["apply"] + tasks * heads,
               "student": tasks * (dev.fixed_seconds["embed"] + student),
               "teacher": tasks * (dev.fixed_seconds["embed"] + teacher)}
    f_enc = texts * per_text_flops("shared")
    f_head = texts * head_flops(model.dim, head_outputs)
    f_student = texts * per_text_flops("student") + f_head
    flops = {"shared": f_enc + tasks * f_head, "student": tasks * f_student,
             "teacher": tasks * (texts * per_text_flops("teacher") + f_head)}
    shared_fixed = dev.fixed_seconds["embed"] + enc + dev.fixed_seconds["apply"]
    per_task = dev.fixed_seconds["embed"] + student
    return Plan(tasks, texts, float(t.mean()), seconds, flops, _crossover(shared_fixed, heads, per_task),
                _crossover(f_enc, f_head, f_student),
                {q: texts * code_bytes(model.dim, q) for q in QUANTIZATIONS},  # type: ignore[arg-type]
                backend, 1e6 * per_text("shared"))


def _crossover(fixed: float, per_task_shared: float, per_task_model: float) -> int | None:
    """Smallest N with fixed + N·per_task_shared <= N·per_task_model."""
    gain = per_task_model - per_task_shared
    if gain <= 0:
        return None
    return max(1, math.ceil(fixed / gain - 1e-12))
