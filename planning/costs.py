"""The cost of serving N tasks: one shared encoder pass + N heads on stored codes, against N per-task models.

Seconds come from measured per-text costs (``docs/costs.json``, re-measured by ``bench/costs.py --write``):
an encoder pass over a text of t tokens costs a + b·t + c·t² seconds (attention is quadratic in t), fitted on this
machine at several lengths; a head on a stored code costs a fixed time per text; each job run pays fixed seconds
(Spark session, model load, publication). FLOPs are counted from the architectures (``planning.flops``).
The crossover N* is the smallest N at which the shared path is no dearer: E + N·H <= N·S, so N* = ceil(E / (S - H)).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .flops import Architecture, encoder_flops, head_flops
from encoder.quantize import QUANTIZATIONS, code_bytes

PATHS = ("shared", "student", "teacher")


@dataclass(frozen=True)
class DeviceCosts:
    seconds_per_text: dict[str, tuple[float, float, float]]   # path -> (a, b, c): a + b·t + c·t² seconds per text
    head_seconds_per_text: float                                # one head on one stored code
    fixed_seconds: dict[str, float]                             # per job run: embed, apply

    def encoder_seconds(self, path: str, tokens: float) -> float:
        a, b, c = self.seconds_per_text[path]
        return a + b * tokens + c * tokens * tokens


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
        archs = {k: Architecture(**v) for k, v in d["architectures"].items()}
        missing = [p for p in PATHS if p not in archs]
        if missing:
            raise ValueError(f"{path}: architectures lacks {missing}")
        devices = {k: DeviceCosts({p: tuple(v["seconds_per_text"][p]) for p in PATHS},  # type: ignore[misc]
                                  float(v["head_seconds_per_text"]), dict(v["fixed_seconds"]))
                   for k, v in d["devices"].items()}
        return cls(archs, devices, int(d["dim"]), d.get("measured", {}))

    def device(self, name: str) -> DeviceCosts:
        if name not in self.devices:
            raise ValueError(f"no costs measured for device {name!r} (measured: {sorted(self.devices)}); run "
                             f"bench/costs.py --write on such a machine")
        return self.devices[name]


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


def plan(model: CostModel, device: str, tasks: int, texts: float, tokens: float | np.ndarray,
         head_outputs: int = 4) -> Plan:
    """Cost of serving ``tasks`` tasks on ``texts`` texts of ``tokens`` tokens (special tokens included): one mean
    count, or a sample of counts standing for the length distribution (attention makes cost per text convex in
    length, so a distribution costs more than its mean)."""
    t = np.atleast_1d(np.asarray(tokens, dtype=np.float64))
    if tasks < 1 or texts <= 0 or t.size == 0 or t.min() < 3:
        raise ValueError(f"tasks={tasks}, texts={texts}, tokens={t.min() if t.size else 'none'}: expected tasks >= 1, "
                         "texts > 0, tokens >= 3")
    dev = model.device(device)

    def per_text(path: str) -> float:
        return float(np.mean(dev.encoder_seconds(path, t)))  # type: ignore[arg-type]

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
                {q: texts * code_bytes(model.dim, q) for q in QUANTIZATIONS})  # type: ignore[arg-type]


def _crossover(fixed: float, per_task_shared: float, per_task_model: float) -> int | None:
    """Smallest N with fixed + N·per_task_shared <= N·per_task_model."""
    gain = per_task_model - per_task_shared
    if gain <= 0:
        return None
    return max(1, math.ceil(fixed / gain - 1e-12))
