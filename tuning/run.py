"""One process's whole tuning run (the driver's, or each of TorchDistributor's): load, train, write the model folder.

The job is a typed, frozen ``TuningJob`` (plain data: the distributor pickles it to each process), not a raw dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoder.features import FeatureSettings

from . import distributed
from .config import MultiTaskConfig
from .data import TaskData
from .loop import train_shared_encoder
from .network import load_trunk


@dataclass(frozen=True)
class TuningJob:
    """What one tuning run needs: the base model folder, the feature settings (as configured; layers resolved
    against the model here), the tasks, the recipe, where to write and what the lineage says."""

    base_model: str
    features: FeatureSettings
    tasks: tuple[TaskData, ...]
    training: MultiTaskConfig
    out: str
    lineage: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    threads: int = 0                      # 0: leave torch's count; else split across the processes
    thresholds: np.ndarray | None = None  # binary thresholds the heads see during tuning (None: zero)


def train_and_save(job: TuningJob) -> dict | None:
    """Load the base encoder, train on ``job.tasks``, and (rank 0) write the model folder to ``job.out``.

    Runs as is in the driver, or once per process under Spark's TorchDistributor / torchrun: RANK and WORLD_SIZE
    come from the environment, the processes join a group, and only rank 0 writes and returns the summary.
    """
    import os

    from encoder.model import configure_threads, save_model_folder

    rank, world = distributed.rank_and_world()
    device = job.device
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    configure_threads(max(1, job.threads // world) if job.threads else 0)
    with distributed.process_group(world, device):
        cfg = job.training
        model, tokenizer = load_trunk(job.base_model, device)
        settings = job.features.resolve(int(model.config.num_hidden_layers))
        base = load_trunk(job.base_model, device)[0] if cfg.keep_general > 0 else None
        out = train_shared_encoder(model, tokenizer, settings, job.tasks, cfg, device, base, rank, world,
                                   thresholds=job.thresholds)
        if rank != 0:
            return None
        summary = {"best_step": out.best_step, "best_validation_mean": round(out.best_score, 4), "steps": out.steps,
                   "examples_seen": out.examples_seen, "seconds": round(out.seconds, 1), "history": out.history,
                   "processes": world, "device": device}
        lineage = dict(job.lineage) | {"training_run": summary}
        summary["fingerprint"] = save_model_folder(job.out, out.model, tokenizer, lineage)
        return summary
