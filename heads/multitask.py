"""Multi-task fine-tuning of the shared encoder (Du et al. 2020): one transformer, the spec's feature extraction, one
head per task, trained jointly so that frozen features (and their sign bits) serve tasks the encoder never saw.

The recipe, and where it comes from:
- **Heterogeneous steps**: every step draws ``texts_per_step`` examples, each from a task drawn with probability
  proportional to ``n_task ** (1 / temperature)`` (T=1: proportional to size, MT-DNN's sampling; large T: uniform).
  Muppet found mixing tasks within a step more stable than one task per step. Within a task, rows are visited in a
  seeded shuffled order and reshuffled when exhausted, so a small task is revisited and a large one not repeated.
- **Loss scaling**: a task's loss is divided by log(number of classes) (Muppet), so a 20-way task does not outweigh a
  binary one merely because its cross-entropy starts higher. Multi-label tasks are per-label binary losses (log 2).
- **Binary-aware training** (``binary: ste``): heads see the pooled features through the same quantization the table
  stores (x > threshold -> +1, else -1), with a straight-through gradient (the identity on the unit-RMS features), so
  the encoder learns to put its information into the bits. ``ste_mixed`` also trains the heads on the float path.
- **Bit margin** (``bit_margin``, off by default): weights mean_d (|x_d - t_d| - 1)^2 on the unit-RMS features x
  (t: the thresholds), the quantization loss of deep hashing (Li et al. 2016, DPSH): every dimension is pushed away
  from its threshold, on every text, so the sign keeps more of the feature for tasks no head was trained on.
- **Keeping the encoder general**: ``keep_general`` weights a term 1 - cos(features, base encoder's features on the
  same texts), so similarity and unseen tasks keep what the base model knew.
- Early stopping on the tuning tasks' validation splits (mean of per-task accuracy / micro-F1, each through the path
  the heads use), a token budget per micro-batch with gradient accumulation (memory is bounded whatever the text
  lengths), warm-up then linear decay, fp16/bf16 autocast on GPU. Deterministic on CPU for a seed and thread count.
- Data parallel (``world`` > 1, e.g. under Spark's TorchDistributor): every rank draws the same step, encodes its
  slice of it, and gradients are summed across ranks before the step, so a step's gradient is the one process's
  (up to float rounding and each rank's own dropout masks); rank 0's validation figures decide early stopping.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence, get_args

import numpy as np
import torch
from torch import nn

from encoder.pooling import feature_dim, pool_layers, resolve_layers
from encoder.typed_config import ConfigError

from .modules import Head
from .tasks import MISSING, LabelError, TaskConfig

logger = logging.getLogger(__name__)

BinaryMode = Literal["off", "ste", "ste_mixed"]
LossScaling = Literal["log_classes", "none"]
BINARY_MODES: tuple[str, ...] = get_args(BinaryMode)
LOSS_SCALINGS: tuple[str, ...] = get_args(LossScaling)


@dataclass(frozen=True)
class MultiTaskConfig:
    """Optimisation settings of one multi-task run (the ``training:`` section of conf/train_encoder.yaml)."""

    max_steps: int = 600                 # upper bound; early stopping usually ends sooner
    eval_every: int = 100                # steps between validation passes
    patience: int = 3                    # validation passes without a better score before stopping
    texts_per_step: int = 32             # examples per optimiser step, across tasks
    token_budget: int = 4096             # padded tokens per micro-batch; a step accumulates as many as it needs
    max_length: int = 128                # training truncation (the feature spec's max_length applies at inference)
    lr: float = 5e-5                     # AdamW on the transformer
    head_lr: float = 1e-3                # AdamW on the task heads
    weight_decay: float = 0.01
    warmup_steps: int = 30               # linear warm-up, then linear decay to 0 at max_steps
    temperature: float = 2.0             # task sampling: p ~ n ** (1/T)
    loss_scaling: LossScaling = "log_classes"
    # off | ste | ste_mixed: chosen by the transfer study on the tuning tasks' validation (ste_mixed 0.557 vs ste
    # 0.549 mean, README "Training the shared encoder")
    binary: BinaryMode = "ste_mixed"
    keep_general: float = 1.0            # weight of 1 - cos(features, base features); 0 turns it off
    bit_margin: float = 0.0              # weight of mean (|x - t| - 1)^2 on unit-RMS features; 0 turns it off
    distill_alpha: float = 0.5           # tasks with teacher logits: weight of the hard labels (rest: soft targets)
    distill_temperature: float = 2.0     # softens teacher and student alike (Hinton et al. 2015; loss x T²)
    val_rows: int = 1000                 # validation rows per task at most (the first by a hash of the id)
    seed: int = 0
    autocast: Literal["none", "fp16", "bf16"] = "bf16"   # GPU only; CPU trains in fp32

    def validate(self, source: str, prefix: str) -> None:
        for key in ("max_steps", "eval_every", "patience", "texts_per_step", "token_budget", "val_rows"):
            if getattr(self, key) < 1:
                raise ConfigError(source, f"{prefix}{key}", f"= {getattr(self, key)}; expected >= 1")
        if not 8 <= self.max_length <= 512:
            raise ConfigError(source, f"{prefix}max_length", f"= {self.max_length}; expected 8..512")
        if self.token_budget < self.max_length:
            raise ConfigError(source, f"{prefix}token_budget", f"= {self.token_budget}; expected >= max_length "
                              f"({self.max_length}), so one text of full length fits a micro-batch")
        if not 0 <= self.distill_alpha <= 1:
            raise ConfigError(source, f"{prefix}distill_alpha", f"= {self.distill_alpha}; expected 0..1")
        for key in ("lr", "head_lr", "temperature", "distill_temperature"):
            if not getattr(self, key) > 0:
                raise ConfigError(source, f"{prefix}{key}", f"= {getattr(self, key)}; expected > 0")
        for key in ("weight_decay", "keep_general", "bit_margin", "warmup_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(source, f"{prefix}{key}", f"= {getattr(self, key)}; expected >= 0")


@dataclass(frozen=True)
class Features:
    """How pooled features are made: the feature part of a spec (layers as hidden-state indices)."""

    layers: tuple[int, ...]
    layer_combine: str = "mean"
    pooling: str = "mean"
    normalize: bool = True
    thresholds: np.ndarray | None = field(default=None, repr=False)   # binary thresholds (None = zero)


@dataclass
class TaskData:
    """One task's labelled texts: train rows and validation rows (labels as heads/train reads them)."""

    task: TaskConfig
    n_classes: int                        # multiclass: classes; binary: 2; multilabel: labels
    train_texts: list[str]
    train_y: np.ndarray                   # int64[n] or int64[n, L]; -1 = unknown
    val_texts: list[str]
    val_y: np.ndarray
    # Knowledge distillation (a per-task student): the teacher's logits float32[n, outputs] on the training texts.
    # The loss is then distill_alpha x the hard-label loss + (1 - distill_alpha) x T² x the soft-target loss.
    train_teacher_logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.train_teacher_logits is not None and self.train_teacher_logits.shape[0] != len(self.train_texts):
            raise ValueError(f"task {self.task.name!r}: {self.train_teacher_logits.shape[0]} teacher logit rows for "
                             f"{len(self.train_texts)} training texts")
        for part, texts, y in (("train", self.train_texts, self.train_y), ("validation", self.val_texts, self.val_y)):
            if len(texts) != len(y):
                raise ValueError(f"task {self.task.name!r}: {len(texts)} {part} texts but {len(y)} label rows")
            known = (y != MISSING) if y.ndim == 1 else (y != MISSING).any(axis=1)
            if not known.all():     # a row with no label for this task carries nothing for it
                raise LabelError(f"task {self.task.name!r}: {int((~known).sum())} {part} rows have no label; drop "
                                 "them before training (the job does)")
        if len(self.train_texts) == 0:
            raise LabelError(f"task {self.task.name!r} has no training rows")
        if len(self.val_texts) == 0:
            raise LabelError(f"task {self.task.name!r} has no validation rows (early stopping needs them)")
        if self.task.kind == "multiclass" and self.n_classes < 2:
            raise LabelError(f"task {self.task.name!r} has {self.n_classes} class; a multiclass task needs >= 2")

    @property
    def n_outputs(self) -> int:
        return self.task.n_outputs(self.n_classes)

    def loss_divisor(self, scaling: str) -> float:
        """Muppet's scaling: log of the number of classes the head chooses among (2 for binary and each label)."""
        if scaling != "log_classes":
            return 1.0
        return math.log(self.n_classes if self.task.kind == "multiclass" else 2)


@dataclass
class TrainedEncoder:
    """The outcome: the fine-tuned transformer (best validation state), its task heads and the run's history."""

    model: Any
    heads: dict[str, Head]
    history: list[dict]                   # one record per validation pass: step, seconds, loss, per-task metrics
    best_step: int
    best_score: float
    steps: int
    seconds: float
    examples_seen: int


# -- the network ------------------------------------------------------------------------------------------------
class SharedEncoder(nn.Module):
    """Transformer + the spec's pooling + one head per task. ``features`` gives float32[n, dim] exactly as the
    embed job's extractor computes them (up to dropout in training mode)."""

    def __init__(self, model: nn.Module, feats: Features, tasks: Sequence[TaskData], seed: int):
        super().__init__()
        self.model, self.feats = model, feats
        self.dim = feature_dim(int(model.config.hidden_size), len(feats.layers), feats.layer_combine)  # type: ignore
        self.scale = math.sqrt(self.dim) if feats.normalize else 1.0    # heads/inputs.py: unit RMS per dimension
        g = torch.Generator().manual_seed(seed)
        heads = {}
        for t in tasks:
            h = Head(self.dim, t.n_outputs, t.task.hidden if t.task.head == "mlp" else 0)
            with torch.no_grad():             # seeded, independent of the order modules were built in
                for p in h.parameters():
                    p.copy_(torch.empty_like(p).uniform_(-1, 1, generator=g) / math.sqrt(p.shape[-1]))
            heads[t.task.name] = h
        self.heads = nn.ModuleDict(heads)
        thr = feats.thresholds
        self.register_buffer("thresholds", torch.zeros(self.dim) if thr is None else torch.as_tensor(thr).float(),
                             persistent=False)

    def features(self, ids: torch.Tensor, mask: torch.Tensor, autocast: torch.dtype | None = None) -> torch.Tensor:
        ctx = torch.autocast(device_type="cuda", dtype=autocast) if autocast is not None else contextlib.nullcontext()
        with ctx:
            out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return pool_layers(out.hidden_states, mask, self.feats.layers, self.feats.pooling,  # type: ignore[arg-type]
                           self.feats.layer_combine, self.feats.normalize)  # type: ignore[arg-type]

    def head_input(self, z: torch.Tensor, binary: bool) -> torch.Tensor:
        """What a head sees. Binary: the stored code decoded (+1 where z > threshold, else -1) in the forward pass,
        with the identity gradient of the unit-RMS features in the backward pass (straight-through)."""
        x = z * self.scale
        if not binary:
            return x
        q = torch.where(z > self.thresholds, 1.0, -1.0).to(x.dtype)
        return q + (x - x.detach())     # exactly q forward (q + 0); x's gradient backward

    def bit_margin_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Per text: mean over dimensions of (|x - t| - 1)^2 on the unit-RMS features, 0 when every dimension sits
        one RMS away from its threshold (where the sign loses least)."""
        return ((z.float() - self.thresholds).abs() * self.scale - 1).square().mean(1)


def load_trunk(model_path: str, device: str = "cpu") -> tuple[Any, Any]:
    """The transformer in training form (dropout on) and its tokenizer, through the one loader's rules."""
    from encoder.model import load_encoder

    loaded = load_encoder(model_path, device=device)
    return loaded.model.train(), loaded.tokenizer


def spec_features(layers: str | Sequence[int], num_layers: int, layer_combine: str, pooling: str, normalize: bool,
                  thresholds: np.ndarray | None = None) -> Features:
    return Features(resolve_layers(layers, num_layers), layer_combine, pooling, normalize, thresholds)


# -- batching ---------------------------------------------------------------------------------------------------
def micro_batches(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Split one step's examples (sorted by length) into micro-batches of at most ``budget`` padded tokens."""
    order = np.argsort(lengths, kind="stable")
    out, cur, width = [], [], 0
    for i in order:
        w = max(width, int(lengths[i]))
        if cur and w * (len(cur) + 1) > budget:
            out.append(np.asarray(cur))
            cur, w = [], int(lengths[i])
        cur.append(int(i))
        width = w
    if cur:
        out.append(np.asarray(cur))
    return out


def pad(rows: Sequence[Sequence[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device), mask.to(device)


class TaskSampler:
    """Seeded heterogeneous steps: tasks by temperature, rows in reshuffled passes per task."""

    def __init__(self, sizes: Sequence[int], temperature: float, seed: int):
        w = np.asarray(sizes, np.float64) ** (1.0 / temperature)
        self.p = w / w.sum()
        self.rng = np.random.default_rng(seed)
        self.sizes = list(sizes)
        self.orders = [self.rng.permutation(n) for n in sizes]
        self.pos = [0] * len(sizes)

    def step(self, n: int) -> list[tuple[int, int]]:
        tasks = self.rng.choice(len(self.sizes), size=n, p=self.p)
        out = []
        for t in tasks:
            if self.pos[t] == self.sizes[t]:
                self.orders[t], self.pos[t] = self.rng.permutation(self.sizes[t]), 0
            out.append((int(t), int(self.orders[t][self.pos[t]])))
            self.pos[t] += 1
        return out


# -- losses and metrics -----------------------------------------------------------------------------------------
def task_loss(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example loss float[n] (multi-label: mean over the labels known on that row)."""
    if kind == "multiclass":
        return nn.functional.cross_entropy(logits.float(), y, reduction="none")
    if kind == "binary":
        return nn.functional.binary_cross_entropy_with_logits(logits.float()[:, 0], y.float(), reduction="none")
    known = (y != MISSING).float()
    per = nn.functional.binary_cross_entropy_with_logits(logits.float(), y.clamp(min=0).float(), reduction="none")
    return (per * known).sum(1) / known.sum(1).clamp(min=1)


def soft_target_loss(kind: str, logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example distillation loss float[n]: KL(teacher || student) of the temperature-softened distributions
    (multiclass), or the binary cross-entropy against the teacher's softened probabilities (binary, multilabel; mean
    over labels), times T² so its gradients keep their size as T changes."""
    t = temperature
    s, q = logits.float() / t, teacher.float() / t
    if kind == "multiclass":
        per = nn.functional.kl_div(nn.functional.log_softmax(s, 1), nn.functional.log_softmax(q, 1), reduction="none",
                                   log_target=True).sum(1)
    else:
        per = nn.functional.binary_cross_entropy_with_logits(s, torch.sigmoid(q), reduction="none").mean(1)
    return per * t * t


def task_metric(kind: str, logits: np.ndarray, y: np.ndarray) -> float:
    """Accuracy (multiclass, binary) or micro-F1 at 0.5 over known labels (multilabel)."""
    if kind == "multiclass":
        return float((logits.argmax(1) == y).mean())
    if kind == "binary":
        return float(((logits[:, 0] > 0).astype(np.int64) == y).mean())
    known = y != MISSING
    pred = logits > 0
    tp = float((pred & (y == 1) & known).sum())
    fp = float((pred & (y == 0) & known).sum())
    fn = float((~pred & (y == 1) & known).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1.0)


# -- training ---------------------------------------------------------------------------------------------------
def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length,
                     return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]


def _sum_grads(params: list[nn.Parameter], world: int) -> None:
    """Data parallel: every rank's gradient becomes the sum over ranks (unused parameters count as zero)."""
    import torch.distributed as dist

    for p in params:
        dist.all_reduce(p.grad)


def _sum_scalar(x: float) -> float:
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0])


def _from_rank0(scores: dict[str, float], device: str) -> dict[str, float]:
    import torch.distributed as dist

    t = torch.tensor(list(scores.values()), dtype=torch.float64, device=device if device.startswith("cuda") else "cpu")
    dist.broadcast(t, src=0)
    return dict(zip(scores, t.cpu().tolist()))


def train_shared_encoder(model: nn.Module, tokenizer: Any, feats: Features, tasks: Sequence[TaskData],
                         cfg: MultiTaskConfig, device: str = "cpu", base: nn.Module | None = None,
                         rank: int = 0, world: int = 1, log: Callable[[str], None] | None = None) -> TrainedEncoder:
    """Fine-tune ``model`` on ``tasks`` jointly; return the state with the best mean validation score.

    ``base`` is the frozen base encoder for the keep-general term (loaded by the caller; required when
    ``cfg.keep_general`` > 0). Under data parallelism every rank calls this with the same arguments and its
    ``rank``; ``torch.distributed`` must be initialised.
    """
    if not tasks:
        raise ValueError("no tasks to train on")
    if cfg.keep_general > 0 and base is None:
        raise ValueError("keep_general > 0 needs the base encoder (base=...)")
    log = log or logger.info
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed * 1000 + rank)
    net = SharedEncoder(model, feats, tasks, cfg.seed).to(device)
    net.train()
    if base is not None:
        base = base.to(device).eval()
        for p in base.parameters():
            p.requires_grad_(False)
    on_gpu = device.startswith("cuda")
    amp = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.autocast) if on_gpu else None
    pad_id = tokenizer.pad_token_id or 0
    train_ids = [_tokenize(tokenizer, t.train_texts, cfg.max_length) for t in tasks]
    val = [_validation_slice(t, cfg.val_rows) for t in tasks]
    val_ids = [_tokenize(tokenizer, texts, cfg.max_length) for texts, _ in val]
    trunk = [p for p in net.model.parameters() if p.requires_grad]
    head_params = list(net.heads.parameters())
    decay = [p for p in trunk if p.ndim > 1]
    no_decay = [p for p in trunk if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
                             {"params": head_params, "lr": cfg.head_lr, "weight_decay": 0.0}])
    lr0 = [g["lr"] for g in opt.param_groups]
    for p in trunk + head_params:                       # every parameter has a gradient tensor from the start
        p.grad = torch.zeros_like(p)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)   # fp16 gradients underflow unscaled
    sampler = TaskSampler([len(t.train_texts) for t in tasks], cfg.temperature, cfg.seed)
    binary = cfg.binary != "off"
    names = [t.task.name for t in tasks]
    history: list[dict] = []
    best = (-math.inf, 0, None)
    bad_evals, seen, step = 0, 0, 0
    while step < cfg.max_steps:
        step += 1
        frac = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        decay_f = max(0.0, (cfg.max_steps - step) / max(1, cfg.max_steps - cfg.warmup_steps))
        for g, lr in zip(opt.param_groups, lr0):
            g["lr"] = lr * (frac if step <= cfg.warmup_steps else decay_f)
        drawn = sampler.step(cfg.texts_per_step)
        mine = drawn[rank::world]
        n_total = len(drawn)
        opt.zero_grad(set_to_none=False)   # zeros, not None: a head no example of this step used gets a zero
        # gradient in one process as in many, so AdamW treats it alike (and the all-reduce sees every tensor)
        rows = [train_ids[t][i] for t, i in mine]
        lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
        step_loss = 0.0
        for mb in micro_batches(lengths, cfg.token_budget) if rows else []:
            ids, mask = pad([rows[i] for i in mb], pad_id, device)
            z = net.features(ids, mask, amp)
            loss = z.new_zeros(())
            by_task: dict[int, list[int]] = {}
            for j, i in enumerate(mb):
                by_task.setdefault(mine[i][0], []).append(j)
            for t, js in sorted(by_task.items()):
                td = tasks[t]
                y = torch.as_tensor(np.stack([td.train_y[mine[mb[j]][1]] for j in js])).to(device)
                zt = z[js]
                paths = [True] if cfg.binary == "ste" else [False] if cfg.binary == "off" else [True, False]
                for b in paths:
                    logits = net.heads[td.task.name](net.head_input(zt, b))
                    per = task_loss(td.task.kind, logits, y)
                    if td.train_teacher_logits is not None:
                        soft = torch.as_tensor(np.stack([td.train_teacher_logits[mine[mb[j]][1]] for j in js])).to(device)
                        per = cfg.distill_alpha * per + (1 - cfg.distill_alpha) * soft_target_loss(
                            td.task.kind, logits, soft, cfg.distill_temperature)
                    loss = loss + per.sum() / td.loss_divisor(cfg.loss_scaling) / len(paths)
            if cfg.keep_general > 0:
                with torch.no_grad():
                    zb = pool_layers(base(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states,
                                     mask, feats.layers, feats.pooling, feats.layer_combine, True)  # type: ignore
                cos = nn.functional.cosine_similarity(z.float(), zb.float(), dim=1)
                loss = loss + cfg.keep_general * (1 - cos).sum()
            if cfg.bit_margin > 0:
                loss = loss + cfg.bit_margin * net.bit_margin_loss(z).sum()
            scaler.scale(loss / n_total).backward()
            step_loss += float(loss.detach())
        if world > 1:
            _sum_grads(trunk + head_params, world)
            step_loss = _sum_scalar(step_loss)
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(trunk + head_params, 1.0)
        scaler.step(opt)
        scaler.update()
        seen += n_total
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            scores = _evaluate(net, tasks, val, val_ids, pad_id, device, amp, binary, cfg.token_budget)
            if world > 1:   # rank 0's figures decide for all, so every rank stops at the same step
                scores = _from_rank0(scores, device)
            score = float(np.mean(list(scores.values())))
            rec = {"step": step, "examples": seen, "seconds": round(time.perf_counter() - t0, 1),
                   "train_loss": round(step_loss / n_total, 4), "validation": {k: round(v, 4) for k, v in
                                                                                 scores.items()},
                   "validation_mean": round(score, 4)}
            history.append(rec)
            log(f"step {step}/{cfg.max_steps}: validation mean {score:.4f} "
                + " ".join(f"{n}={scores[n]:.3f}" for n in names) + f" ({rec['seconds']:.0f} s)")
            if score > best[0]:
                best = (score, step, copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()}))
                bad_evals = 0
            else:
                bad_evals += 1
                if bad_evals >= cfg.patience:
                    log(f"early stop at step {step}: no better validation score in {cfg.patience} passes")
                    break
            net.train()
    score, best_step, state = best
    net.load_state_dict(state)  # type: ignore[arg-type]
    net.eval()
    return TrainedEncoder(net.model, {k: v for k, v in net.heads.items()}, history, best_step, score, step,
                          time.perf_counter() - t0, seen)


def _validation_slice(t: TaskData, cap: int) -> tuple[list[str], np.ndarray]:
    return t.val_texts[:cap], t.val_y[:cap]


@torch.no_grad()
def _evaluate(net: SharedEncoder, tasks: Sequence[TaskData], val, val_ids, pad_id: int, device: str, amp,
              binary: bool, budget: int) -> dict[str, float]:
    net.eval()
    out = {}
    for td, (_, y), ids in zip(tasks, val, val_ids):
        lengths = np.fromiter((len(r) for r in ids), np.int64, len(ids))
        logits = np.zeros((len(ids), td.n_outputs), np.float32)
        for mb in micro_batches(lengths, budget * 2):
            i, m = pad([ids[j] for j in mb], pad_id, device)
            z = net.features(i, m, amp)
            logits[mb] = net.heads[td.task.name](net.head_input(z, binary)).float().cpu().numpy()
        out[td.task.name] = task_metric(td.task.kind, logits, y)
    return out


# -- one process's whole run (the driver's, or each of TorchDistributor's) ---------------------------------------
def train_and_save(job: dict) -> dict | None:
    """Load the base encoder, train on ``job['tasks']``, and (rank 0) write the model folder to ``job['out']``.

    Runs as is in the driver, or once per process under Spark's TorchDistributor / torchrun: then RANK and
    WORLD_SIZE come from the environment, gloo (CPU) or NCCL (GPU) joins the processes, and only rank 0 writes and
    returns the summary. ``job`` holds plain data only (it is pickled to each process by the distributor).
    """
    import os

    from encoder.model import configure_threads, save_model_folder

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = job.get("device", "cpu")
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    configure_threads(max(1, job.get("threads", 0) // world) if job.get("threads") else 0)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        cfg: MultiTaskConfig = job["training"]
        model, tokenizer = load_trunk(job["base_model"], device)
        f = job["features"]
        feats = spec_features(f["layers"], int(model.config.num_hidden_layers), f["layer_combine"], f["pooling"],
                              f["normalize"], f.get("thresholds"))
        base = load_trunk(job["base_model"], device)[0] if cfg.keep_general > 0 else None
        out = train_shared_encoder(model, tokenizer, feats, job["tasks"], cfg, device, base, rank, world)
        if rank != 0:
            return None
        summary = {"best_step": out.best_step, "best_validation_mean": round(out.best_score, 4), "steps": out.steps,
                   "examples_seen": out.examples_seen, "seconds": round(out.seconds, 1), "history": out.history,
                   "processes": world, "device": device}
        lineage = dict(job["lineage"]) | {"training_run": summary}
        summary["fingerprint"] = save_model_folder(job["out"], out.model, tokenizer, lineage)
        return summary
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


# -- per-task models --------------------------------------------------------------------------------------------
def first_layers(model: nn.Module, layers: int) -> nn.Module:
    """A copy of a BERT-style encoder keeping only its first ``layers`` transformer layers: a per-task student
    starts from the teacher's own lower layers (as DistilBERT starts from every other layer of BERT)."""
    n = int(model.config.num_hidden_layers)  # type: ignore[union-attr]
    if not 1 <= layers <= n:
        raise ValueError(f"layers = {layers}; this model has 1..{n}")
    student = copy.deepcopy(model)
    student.encoder.layer = student.encoder.layer[:layers]  # type: ignore[union-attr,index]
    student.config.num_hidden_layers = layers  # type: ignore[union-attr]
    return student


@torch.no_grad()
def task_logits(trained: TrainedEncoder, tokenizer: Any, feats: Features, task: TaskData, texts: Sequence[str],
                max_length: int, binary: bool = False, budget: int = 8192) -> np.ndarray:
    """A trained model's logits float32[n, outputs] for ``texts`` on one of its tasks (e.g. a teacher's soft targets)."""
    net = SharedEncoder(trained.model.eval(), feats, [task], 0)
    net.heads[task.task.name] = trained.heads[task.task.name]
    ids = _tokenize(tokenizer, texts, max_length)
    lengths = np.fromiter((len(r) for r in ids), np.int64, len(ids))
    out = np.zeros((len(ids), task.n_outputs), np.float32)
    device = next(trained.model.parameters()).device.type
    for mb in micro_batches(lengths, budget):
        i, m = pad([ids[j] for j in mb], tokenizer.pad_token_id or 0, device)
        out[mb] = net.heads[task.task.name](net.head_input(net.features(i, m), binary)).float().cpu().numpy()
    return out
