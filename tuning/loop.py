"""The tuning loop, in named steps: schedule, draw, forward (the extractor's forward function), task losses,
regularisers (keep-general, bit margin), gradient sync, optimiser step, validation, early stopping.

``train_shared_encoder`` is the whole run; ``TuningRun`` holds its state so each step reads as one method.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from encoder.batching import padded_batches
from encoder.encode import tokenize
from encoder.features import FeatureSettings
from encoder.forward import pad_ids, pooled_features

from . import distributed
from .config import MultiTaskConfig
from .data import TaskData, TrainedEncoder
from .losses import keep_general_loss, soft_target_loss, task_loss, task_metric
from .network import SharedEncoder
from .sampling import TaskSampler

logger = logging.getLogger(__name__)
Drawn = list[tuple[int, int]]     # one step's examples: (task index, row index)


def token_ids(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Texts -> token ids truncated to the recipe's max_length (the extractor's one tokenisation)."""
    return tokenize(tokenizer, texts, max_length)[0]


class TuningRun:
    """One process's tuning run: the network, its optimiser and sampler, and the tokenised tasks."""

    def __init__(self, model: nn.Module, tokenizer: Any, settings: FeatureSettings, tasks: Sequence[TaskData],
                 cfg: MultiTaskConfig, device: str = "cpu", base: nn.Module | None = None, rank: int = 0,
                 world: int = 1, thresholds: np.ndarray | None = None):
        if not tasks:
            raise ValueError("no tasks to train on")
        if cfg.keep_general > 0 and base is None:
            raise ValueError("keep_general > 0 needs the base encoder (base=...)")
        self.tasks, self.cfg, self.device, self.rank, self.world = list(tasks), cfg, device, rank, world
        torch.manual_seed(cfg.seed * 1000 + rank)
        self.net = SharedEncoder(model, settings, tasks, cfg.seed, thresholds).to(device)
        self.net.train()
        self.base = base
        if base is not None:
            self.base = base.to(device).eval()
            for p in self.base.parameters():
                p.requires_grad_(False)
        self.amp = cfg.autocast if device.startswith("cuda") else "none"
        self.pad_id = tokenizer.pad_token_id or 0
        self.train_ids = [token_ids(tokenizer, t.train_texts, cfg.max_length) for t in tasks]
        self.val = [(t.val_texts[:cfg.val_rows], t.val_y[:cfg.val_rows]) for t in tasks]
        self.val_ids = [token_ids(tokenizer, texts, cfg.max_length) for texts, _ in self.val]
        self.trunk = [p for p in self.net.model.parameters() if p.requires_grad]
        self.head_params = list(self.net.heads.parameters())
        self.opt = torch.optim.AdamW([
            {"params": [p for p in self.trunk if p.ndim > 1], "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {"params": [p for p in self.trunk if p.ndim <= 1], "lr": cfg.lr, "weight_decay": 0.0},
            {"params": self.head_params, "lr": cfg.head_lr, "weight_decay": 0.0}])
        self.lr0 = [g["lr"] for g in self.opt.param_groups]
        for p in self.params:                       # every parameter has a gradient tensor from the start
            p.grad = torch.zeros_like(p)
        # fp16 gradients underflow unscaled
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        self.sampler = TaskSampler([len(t.train_texts) for t in tasks], cfg.temperature, cfg.seed)
        self.paths = {"ste": [True], "off": [False], "ste_mixed": [True, False]}[cfg.binary]

    @property
    def params(self) -> list[nn.Parameter]:
        return self.trunk + self.head_params

    # -- one step ---------------------------------------------------------------------------------------------
    def schedule(self, step: int) -> None:
        """Linear warm-up, then linear decay to 0 at max_steps."""
        cfg = self.cfg
        warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        decay = max(0.0, (cfg.max_steps - step) / max(1, cfg.max_steps - cfg.warmup_steps))
        for g, lr in zip(self.opt.param_groups, self.lr0):
            g["lr"] = lr * (warm if step <= cfg.warmup_steps else decay)

    def step(self, step: int) -> tuple[float, int]:
        """One optimiser step -> (summed loss, examples drawn across ranks)."""
        self.schedule(step)
        drawn = self.sampler.step(self.cfg.texts_per_step)
        mine = drawn[self.rank::self.world]
        # zeros, not None: a head no example of this step used gets a zero gradient in one process as in many, so
        # AdamW treats it alike (and the all-reduce sees every tensor)
        self.opt.zero_grad(set_to_none=False)
        rows = [self.train_ids[t][i] for t, i in mine]
        lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
        loss_sum = 0.0
        for mb in padded_batches(lengths, self.cfg.token_budget) if rows else []:
            loss = self.micro_batch_loss([rows[i] for i in mb], [mine[i] for i in mb])
            self.scaler.scale(loss / len(drawn)).backward()
            loss_sum += float(loss.detach())
        if self.world > 1:
            distributed.sum_grads(self.params)
            loss_sum = distributed.sum_scalar(loss_sum)
        self.apply_gradients()
        return loss_sum, len(drawn)

    def micro_batch_loss(self, rows: list[list[int]], drawn: Drawn) -> torch.Tensor:
        """Summed loss of one padded micro-batch: every task's heads on their rows, plus the regularisers."""
        ids, mask = pad_ids(rows, self.pad_id, self.device)
        z = self.net.features(ids, mask, self.amp)  # type: ignore[arg-type]
        return self.task_losses(z, drawn) + self.regularisers(z, ids, mask)

    def task_losses(self, z: torch.Tensor, drawn: Drawn) -> torch.Tensor:
        """Each task's loss on its rows of the micro-batch (distilled where it has teacher logits), divided by the
        task's loss scale and by the number of head paths (binary and/or float)."""
        cfg = self.cfg
        loss = z.new_zeros(())
        by_task: dict[int, list[int]] = {}
        for j, (t, _) in enumerate(drawn):
            by_task.setdefault(t, []).append(j)
        for t, js in sorted(by_task.items()):
            td = self.tasks[t]
            row_ids = [drawn[j][1] for j in js]
            y = torch.as_tensor(np.stack([td.train_y[i] for i in row_ids])).to(self.device)
            zt = z[js]
            for binary in self.paths:
                logits = self.net.heads[td.task.name](self.net.head_input(zt, binary))
                per = task_loss(td.task.kind, logits, y)
                if td.train_teacher_logits is not None:
                    soft = torch.as_tensor(np.stack([td.train_teacher_logits[i] for i in row_ids])).to(self.device)
                    per = cfg.distill_alpha * per + (1 - cfg.distill_alpha) * soft_target_loss(
                        td.task.kind, logits, soft, cfg.distill_temperature)
                loss = loss + per.sum() / td.loss_divisor(cfg.loss_scaling) / len(self.paths)
        return loss

    def regularisers(self, z: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """keep_general x (1 - cos to the base encoder's features) + bit_margin x the bit-margin loss, summed."""
        out = z.new_zeros(())
        if self.cfg.keep_general > 0:
            with torch.no_grad():   # the base's features as the embed job would compute them, normalised
                zb = pooled_features(self.base, ids, mask, dataclasses.replace(self.net.settings, normalize=True))
            out = out + self.cfg.keep_general * keep_general_loss(z, zb).sum()
        if self.cfg.bit_margin > 0:
            out = out + self.cfg.bit_margin * self.net.bit_margin_loss(z).sum()
        return out

    def apply_gradients(self) -> None:
        """Unscale, clip to norm 1, step, update the scaler."""
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()

    # -- validation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Each task's validation metric through the path the heads use (binary codes when tuning for them); rank
        0's figures on every rank."""
        self.net.eval()
        binary = self.cfg.binary != "off"
        out = {}
        for td, (_, y), ids in zip(self.tasks, self.val, self.val_ids):
            logits = self.net.logits(td.task.name, ids, td.n_outputs, self.pad_id, binary, self.cfg.token_budget * 2,
                                     self.amp)  # type: ignore[arg-type]
            out[td.task.name] = task_metric(td.task.kind, logits, y)
        self.net.train()
        if self.world > 1:
            out = distributed.from_rank0(out, self.device)
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return copy.deepcopy({k: v.detach().cpu() for k, v in self.net.state_dict().items()})


class EarlyStopping:
    """Keeps the best validation state; says stop after ``patience`` passes without a better score."""

    def __init__(self, patience: int):
        self.patience, self.bad = patience, 0
        self.score, self.step, self.state = -math.inf, 0, None

    def update(self, score: float, step: int, state: Callable[[], dict]) -> bool:
        """Record one validation pass -> True when the run should stop."""
        if score > self.score:
            self.score, self.step, self.state, self.bad = score, step, state(), 0
            return False
        self.bad += 1
        return self.bad >= self.patience


def train_shared_encoder(model: nn.Module, tokenizer: Any, settings: FeatureSettings, tasks: Sequence[TaskData],
                         cfg: MultiTaskConfig, device: str = "cpu", base: nn.Module | None = None,
                         rank: int = 0, world: int = 1, log: Callable[[str], None] | None = None,
                         thresholds: np.ndarray | None = None) -> TrainedEncoder:
    """Fine-tune ``model`` on ``tasks`` jointly; return the state with the best mean validation score.

    ``settings`` are the spec's feature settings with layers resolved; ``base`` is the frozen base encoder for the
    keep-general term (required when ``cfg.keep_general`` > 0); ``thresholds`` the binary thresholds (None: zero).
    Under data parallelism every rank calls this with the same arguments and its ``rank``; ``torch.distributed``
    must be initialised.
    """
    log = log or logger.info
    t0 = time.perf_counter()
    run = TuningRun(model, tokenizer, settings, tasks, cfg, device, base, rank, world, thresholds)
    names = [t.task.name for t in tasks]
    stopper = EarlyStopping(cfg.patience)
    history: list[dict] = []
    seen = step = 0
    while step < cfg.max_steps:
        step += 1
        loss, n = run.step(step)
        seen += n
        if step % cfg.eval_every and step != cfg.max_steps:
            continue
        scores = run.evaluate()
        score = float(np.mean(list(scores.values())))
        rec = {"step": step, "examples": seen, "seconds": round(time.perf_counter() - t0, 1),
               "train_loss": round(loss / n, 4), "validation": {k: round(v, 4) for k, v in scores.items()},
               "validation_mean": round(score, 4)}
        history.append(rec)
        log(f"step {step}/{cfg.max_steps}: validation mean {score:.4f} "
            + " ".join(f"{k}={scores[k]:.3f}" for k in names) + f" ({rec['seconds']:.0f} s)")
        if stopper.update(score, step, run.state):
            log(f"early stop at step {step}: no better validation score in {cfg.patience} passes")
            break
    run.net.load_state_dict(stopper.state)  # type: ignore[arg-type]
    run.net.eval()
    return TrainedEncoder(run.net.model, dict(run.net.heads.items()), history, stopper.step, stopper.score, step,
                          time.perf_counter() - t0, seen)
