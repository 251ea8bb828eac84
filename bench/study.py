"""The studies' small library (bench/transfer.py and bench/crossover.py; the other benchmarks borrow its row rule):
the task groups, the caps and settings as one frozen object, the loaders over ../shared/data, the features, the
linear probe, the bits, and the tuning run of the study's recipe.

Nothing here changes at run time: a script builds its ``StudyCaps`` (``StudyCaps().scaled(2)``, ``QUICK``) and passes
it to every function that needs a cap, and writes ``caps.to_json()`` -- the caps it used -- to its results.json.

Rows are picked by the project's one id hash (``encoder.hashing``: the first 32 bits of sha256(str(id))): the data's
own splits where it has them, else buckets of ``id_bucket`` (validation: bucket < 10; test: 10..19 when a set has no
test split; train: the rest), then the first rows by ``id_hash`` up to the caps -- the rule the head trainer, the
encoder trainer and the embed job's calibration sample use.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import pyarrow.parquet as pq

from _setup import ROOT
from encoder.hashing import id_bucket, id_hash

MODELS = ROOT / "out" / "study" / "models"     # the study's tuned encoders (the crossover's shared one: ste_mixed)

# -- task groups (fixed, so figures stay comparable across changes) -------------------------------------------------
TUNE: tuple[str, ...] = (
    "senteval/sst2", "senteval/trec", "senteval/subj", "tweeteval/emotion", "tweeteval/hate", "tweeteval/sentiment",
    "tweeteval/emoji", "goemotions", "ag_news", "blog_authorship/gender")
HELD_OUT: tuple[str, ...] = (
    "senteval/mr", "senteval/cr", "senteval/mpqa", "senteval/sst5", "tweeteval/irony", "tweeteval/offensive",
    "tweeteval/stance_abortion", "tweeteval/stance_atheism", "tweeteval/stance_climate", "tweeteval/stance_feminist",
    "tweeteval/stance_hillary", "blog_authorship/age_group")
ALL_TASKS: tuple[str, ...] = TUNE + HELD_OUT
SICK = "senteval/sick_e"          # similarity: relatedness of its test pairs
STUDENT_LAYERS = 2                # a per-task student: its teacher's first 2 layers (crossover.py, costs.py)

# -- feature settings the studies compare ---------------------------------------------------------------------------
LAYER_CHOICES = {"last": ("last", "mean"), "last4 mean": ("last4", "mean"), "last4 concat": ("last4", "concat"),
                 "all mean": ("all", "mean")}
POSITIONS = ("cls", "mean", "max")
DEFAULT = ("last4 mean", "mean")           # the default spec's: last4 layers averaged, mean pooling, unit length
ALL_COMBOS = tuple((lc, p) for lc in LAYER_CHOICES for p in POSITIONS)


# -- caps ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitCaps:
    """Rows per split at most (0: the split is not loaded)."""

    train: int
    validation: int
    test: int

    def scaled(self, s: float) -> "SplitCaps":
        return SplitCaps(*(int(getattr(self, f.name) * s) for f in dataclasses.fields(self)))

    def __getitem__(self, split: str) -> int:
        return getattr(self, split)


@dataclass(frozen=True)
class StudyCaps:
    """Every cap and evaluation setting of the studies, in one frozen object passed explicitly."""

    held_out: SplitCaps = SplitCaps(800, 200, 500)       # evaluation rows of each held-out task
    tuning_eval: SplitCaps = SplitCaps(500, 150, 400)    # evaluation rows of each tuning task (its test: unseen rows)
    tuning: SplitCaps = SplitCaps(4000, 150, 0)          # rows each tuning task trains and early-stops on
    sick_pairs: int = 1500                               # senteval/sick_e test pairs (first by id hash)
    calibration_per_task: int = 100                      # tuning-task train texts per task in the calibration sample
    max_length: int = 128                                # evaluation truncation (every encoder, every task)
    tune_max_length: int = 64                            # tuning truncation: about half the cost of 128 on 2 cores
    c_grid: tuple[float, ...] = (0.1, 1.0, 10.0)         # logistic regression C, chosen on validation

    def scaled(self, s: float) -> "StudyCaps":
        """A new object with the task and SICK row caps multiplied by ``s`` (the calibration sample and the settings
        unchanged)."""
        return dataclasses.replace(self, held_out=self.held_out.scaled(s), tuning_eval=self.tuning_eval.scaled(s),
                                   tuning=self.tuning.scaled(s), sick_pairs=int(self.sick_pairs * s))

    def evaluation(self, task: str) -> SplitCaps:
        return self.held_out if task in HELD_OUT else self.tuning_eval

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# A smoke run of a study's whole path in a few minutes on 2 cores (its figures mean nothing).
QUICK = StudyCaps(held_out=SplitCaps(48, 24, 40), tuning_eval=SplitCaps(40, 20, 32), tuning=SplitCaps(64, 16, 0),
                  sick_pairs=100, calibration_per_task=8)


@dataclass(frozen=True)
class Recipe:
    """The study's tuning recipe (one run per variant); ``steps`` etc. come from the command line."""

    steps: int = 150
    texts_per_step: int = 32
    keep_general: float = 1.0
    bit_margin: float = 1.0            # weight of the bit-margin term, in the ste_margin variant only
    token_budget: int = 4096
    patience: int = 2

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


VARIANTS = {"plain": "off", "ste": "ste", "ste_mixed": "ste_mixed", "ste_nokeep": "ste", "ste_margin": "ste_mixed"}


# -- data ---------------------------------------------------------------------------------------------------------
class TaskSpec(NamedTuple):
    folder: str
    kind: str                 # multiclass | multilabel
    columns: list[str]
    classes: int


def labels_of(data: Path) -> dict:
    return json.loads((data / "labels.json").read_text())


def task_spec(name: str, labels: dict) -> TaskSpec:
    if name == "goemotions":
        cols = list(labels["goemotions"]["multi_label_columns"])
        return TaskSpec("goemotions", "multilabel", cols, len(cols))
    if name.startswith("blog_authorship/"):
        col = name.split("/")[1]
        return TaskSpec("blog_authorship", "multiclass", [col], len(labels["blog_authorship"][col]))
    return TaskSpec(name, "multiclass", ["label"], len(labels[name]["label"]))


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def hash_order(ids: Sequence) -> np.ndarray:
    """Row positions ordered by the id hash (ties in input order): "the first n rows" of a sample."""
    return np.argsort(id_hash(ids), kind="stable")


def _split(rows: list, buckets: np.ndarray, three: bool) -> dict[str, list]:
    """Hash split by id bucket: validation < 10, test 10..19 (``three``), train the rest."""
    val = [r for r, b in zip(rows, buckets) if b < 10]
    if three:
        return {"train": [r for r, b in zip(rows, buckets) if b >= 20], "validation": val,
                "test": [r for r, b in zip(rows, buckets) if 10 <= b < 20]}
    return {"train": [r for r, b in zip(rows, buckets) if b >= 10], "validation": val}


def load_rows(data: Path, folder: str, cols: list[str], caps: SplitCaps, exclude: frozenset[str] = frozenset(),
              exclude_splits: tuple[str, ...] = ()) -> tuple[dict[str, tuple[list[str], np.ndarray]], int]:
    """-> ({split: (texts, labels int64[n] or [n, L])}, rows dropped as seen). The data's own splits, else hash
    splits (module docstring); rows without any label dropped; rows of ``exclude_splits`` whose normalised text is
    in ``exclude`` dropped (texts the tuning saw); then the first rows by id hash up to the caps (splits capped at 0
    are left out)."""
    parts: dict[str, list] = {}
    for split in ("train", "validation", "test"):
        f = data / folder / f"{split}.parquet"
        if f.exists():
            t = pq.read_table(f, columns=["id", "text", *cols]).to_pydict()
            y = np.stack([np.asarray(t[c], np.int64) for c in cols], axis=1)
            parts[split] = list(zip(t["id"], t["text"], y))
    if "train" not in parts and "validation" not in parts:           # ag_news: test only
        rows = parts.pop("test")
        parts = _split(rows, id_bucket([r[0] for r in rows]), True)
    if "test" not in parts:                                          # mr, cr, subj, mpqa: one file
        rows = parts.pop("train")
        parts = _split(rows, id_bucket([r[0] for r in rows]), True)
    if "train" not in parts:                                         # tweeteval/sentiment
        rows = parts.pop("validation")
        parts.update(_split(rows, id_bucket([r[0] for r in rows]), False))
    if "validation" not in parts:                                    # trec
        rows = parts.pop("train")
        parts.update(_split(rows, id_bucket([r[0] for r in rows]), False))
    out, removed = {}, 0
    for split in ("train", "validation", "test"):
        if caps[split] <= 0:
            continue
        rows = [r for r in parts[split] if (r[2] >= 0).any()]
        if split in exclude_splits:
            kept = [r for r in rows if norm(r[1]) not in exclude]
            removed += len(rows) - len(kept)
            rows = kept
        rows = [rows[i] for i in hash_order([r[0] for r in rows])[: caps[split]]]
        y = np.stack([r[2] for r in rows]) if rows else np.zeros((0, len(cols)), np.int64)
        out[split] = ([r[1] for r in rows], y if len(cols) > 1 else y[:, 0])
    return out, removed


@dataclass(frozen=True)
class Sick:
    a: list[str]
    b: list[str]
    relatedness: np.ndarray


@dataclass(frozen=True)
class StudyData:
    """What a study reads: task specs, the tuning rows, their texts, each task's evaluation rows, SICK pairs."""

    specs: dict[str, TaskSpec]
    tuning: dict[str, dict]            # the tuning tasks' train/validation rows (what tuning trains on)
    seen: frozenset[str]               # normalised texts the tuning sees
    rows: dict[str, dict]              # evaluation rows of each loaded task: {split: (texts, labels)}
    removed: dict[str, int]            # evaluation rows dropped per task because the tuning saw their text
    sick: Sick | None


def load_study(data: Path, caps: StudyCaps, tasks: Sequence[str] = ALL_TASKS, sick: bool = True) -> StudyData:
    """Every row a study uses. "Never seen": SST is built from MR's sentences, SST-5 shares SST-2's, age_group the
    blog posts gender tunes on, so evaluation rows whose text the tuning sees are dropped (held-out tasks: all
    splits; tuning tasks: test)."""
    unknown = [t for t in tasks if t not in ALL_TASKS]
    if unknown:
        raise ValueError(f"{unknown} are not study tasks; choose from {list(ALL_TASKS)}")
    labels = labels_of(data)
    specs = {n: task_spec(n, labels) for n in ALL_TASKS}
    tuning = {n: load_rows(data, specs[n].folder, specs[n].columns, caps.tuning)[0] for n in TUNE}
    seen = frozenset(norm(t) for n in TUNE for sp in ("train", "validation") for t in tuning[n][sp][0])
    rows, removed = {}, {}
    for n in tasks:
        rows[n], removed[n] = load_rows(data, specs[n].folder, specs[n].columns, caps.evaluation(n), seen,
                                        ("train", "validation", "test") if n in HELD_OUT else ("test",))
    pairs = None
    if sick:
        t = pq.read_table(data / SICK / "test.parquet").to_pydict()
        order = hash_order(t["id"])[: caps.sick_pairs]
        pairs = Sick([t["text"][i] for i in order], [t["text_pair"][i] for i in order],
                     np.asarray([t["relatedness_score"][i] for i in order]))
    return StudyData(specs, tuning, seen, rows, removed, pairs)


def counts_line(rows: dict[str, dict]) -> str:
    return ", ".join(f"{n} " + "/".join(str(len(r[sp][0])) for sp in ("train", "validation", "test") if sp in r)
                     for n, r in rows.items())


# -- features -----------------------------------------------------------------------------------------------------
def extractor(model: Any, tokenizer: Any, settings: Any):
    """The pipeline's own extractor (tokenise, length-bucketed batches, ``encoder.forward``) around any model."""
    from encoder.encode import FeatureExtractor
    from encoder.encoder_config import EncoderConfig
    from encoder.model import LoadedEncoder

    c = model.config
    loaded = LoadedEncoder(tokenizer, model.eval(), "cpu", {"name": "study", "sha256": "-"},
                           int(c.num_hidden_layers), int(c.hidden_size))
    return FeatureExtractor(loaded, EncoderConfig(features=settings))


def default_settings(max_length: int):
    from encoder.features import FeatureSettings

    return FeatureSettings(layers="last4", layer_combine="mean", pooling="mean", normalize=True, max_length=max_length)


def encode(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int,
           combos: Sequence[tuple[str, str]] = (DEFAULT,)) -> dict[tuple[str, str], np.ndarray]:
    """Texts -> {(layer choice, position): float32[n, D]} through the pipeline's extractor. The default combination
    alone is one pass of the default settings; several are one pass per position (every layer, raw), combined and
    normalised here as ``encoder.pooling.pool_layers`` does."""
    from encoder.features import FeatureSettings
    from encoder.pooling import resolve_layers

    if list(combos) == [DEFAULT]:
        return {DEFAULT: extractor(model, tokenizer, default_settings(max_length)).features(texts).values}
    n_layers = int(model.config.num_hidden_layers)
    every = resolve_layers("all", n_layers)
    out = {}
    for pos in [p for p in POSITIONS if any(c[1] == p for c in combos)]:
        raw = extractor(model, tokenizer, FeatureSettings(layers="all", layer_combine="concat", pooling=pos,
                                                          normalize=False, max_length=max_length)
                        ).features(texts).values.reshape(len(texts), len(every), -1)
        for c in [c for c in combos if c[1] == pos]:
            layers, combine = LAYER_CHOICES[c[0]]
            x = raw[:, [every.index(i) for i in resolve_layers(layers, n_layers)]]
            x = x.mean(axis=1) if combine == "mean" else x.reshape(len(texts), -1)
            out[c] = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return out


def encode_groups(model: Any, tokenizer: Any, groups: dict[Any, Sequence[str]], max_length: int,
                  combos: Sequence[tuple[str, str]] = (DEFAULT,)) -> dict[Any, dict[tuple[str, str], np.ndarray]]:
    """``encode`` over several groups of texts at once ({key: texts} -> {key: {combo: float32[n, D]}}): one extractor
    call for all of them, so the length buckets fill (a text's features never depend on its batch mates)."""
    keys = list(groups)
    feats = encode(model, tokenizer, [t for k in keys for t in groups[k]], max_length, combos)
    out, start = {}, 0
    for k in keys:
        n = len(groups[k])
        out[k] = {c: v[start:start + n] for c, v in feats.items()}
        start += n
    return out


def binary(x: np.ndarray, thresholds: np.ndarray | None = None, rotation: tuple | None = None) -> np.ndarray:
    """The stored code as a head sees it: +1/-1 through the one quantizer (optionally after an ITQ rotation)."""
    from encoder.quantize import dequantize, quantize

    if rotation is not None:
        mu, w = rotation
        x = (x - mu) @ w
    return dequantize(quantize(x, "binary", thresholds), x.shape[1], "binary")


def itq(x: np.ndarray, iters: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Iterative quantization (Gong & Lazebnik 2011): PCA then the rotation R minimising ||sign(VR) - VR||."""
    mu = x.mean(0)
    xc = x - mu
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    p = vt.T                                                       # (d, d): all components, bits = dims
    v = xc @ p
    r = np.linalg.qr(np.random.default_rng(seed).standard_normal((p.shape[1],) * 2))[0]
    for _ in range(iters):
        b = np.sign(v @ r)
        u, _, wt = np.linalg.svd(b.T @ v)
        r = (u @ wt).T
    return mu.astype(np.float32), (p @ r).astype(np.float32)


# -- heads --------------------------------------------------------------------------------------------------------
def probe(x: dict[str, np.ndarray], y: dict[str, np.ndarray], multilabel: bool, c_grid: Sequence[float],
          with_validation: bool = False) -> float | tuple[float, float]:
    """Logistic regression with C chosen on validation -> test accuracy (micro-F1 for multi-label); with
    ``with_validation``, (the chosen C's validation score, test score)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    scale = 1.0 if np.abs(x["train"]).max() == 1.0 else math.sqrt(x["train"].shape[1])   # heads/inputs.py

    def fit(c: float):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if not multilabel:
                return LogisticRegression(C=c, max_iter=300).fit(x["train"] * scale, y["train"])
            models = []
            for j in range(y["train"].shape[1]):
                known = y["train"][:, j] >= 0
                yy = y["train"][known, j]
                models.append(int(yy[0]) if yy.min() == yy.max() else
                              LogisticRegression(C=c, max_iter=300).fit(x["train"][known] * scale, yy))
            return models

    def score(m, split: str) -> float:
        if not multilabel:
            return float((m.predict(x[split] * scale) == y[split]).mean())
        pred = np.stack([np.full(len(x[split]), mj) if isinstance(mj, int) else mj.predict(x[split] * scale)
                         for mj in m], axis=1)
        k = y[split] >= 0
        return float(f1_score(y[split][k], pred[k], average="binary"))

    fitted = [fit(c) for c in c_grid]
    val = [score(m, "validation") for m in fitted]
    best = max(range(len(c_grid)), key=lambda i: val[i])            # first best: smallest C wins ties
    test = 100 * score(fitted[best], "test")
    return (100 * val[best], test) if with_validation else test


def avg(acc: dict, kind: str, tasks: Sequence[str]) -> float:
    """Mean of one kind (fp32 | binary | ...) over tasks, from {task: {kind: accuracy}} (nan without tasks)."""
    return float(np.mean([acc[n][kind] for n in tasks])) if len(tasks) else float("nan")


# -- tuning -------------------------------------------------------------------------------------------------------
def task_data(name: str, spec: TaskSpec, rows: dict):
    """A study task's train/validation rows as tuning trains on them."""
    from heads.tasks import TaskConfig
    from tuning.data import TaskData

    task = TaskConfig(name=name.replace("/", "_"), kind="multilabel" if spec.kind == "multilabel" else "multiclass",
                      columns=tuple(spec.columns))
    return TaskData(task, spec.classes, rows["train"][0], rows["train"][1], rows["validation"][0],
                    rows["validation"][1])


def tune(variant: str, recipe: Recipe, caps: StudyCaps, study: StudyData, models: Path = MODELS, threads: int = 2,
         say: Callable[[str], None] = print):
    """One tuning run of the packaged encoder on the tuning tasks (``tuning``, the library the train_encoder job
    runs); saves <models>/<variant> and returns (TrainedEncoder, run summary)."""
    from encoder.model import load_encoder, save_model_folder
    from tuning.config import MultiTaskConfig
    from tuning.loop import train_shared_encoder

    binary_mode = VARIANTS[variant]
    keep = 0.0 if variant == "ste_nokeep" else recipe.keep_general
    margin = recipe.bit_margin if variant == "ste_margin" else 0.0
    steps = recipe.steps
    cfg = MultiTaskConfig(max_steps=steps, eval_every=max(1, steps // 3), patience=recipe.patience,
                          texts_per_step=recipe.texts_per_step, token_budget=recipe.token_budget,
                          max_length=caps.tune_max_length, binary=binary_mode,  # type: ignore[arg-type]
                          keep_general=keep,
                          bit_margin=margin, val_rows=max(1, caps.tuning.validation), seed=0,
                          warmup_steps=max(1, steps // 10))
    base = load_encoder("package", threads=threads)
    frozen = load_encoder("package", threads=threads).model if keep > 0 else None
    settings = default_settings(caps.max_length).resolve(base.num_layers)
    say(f"\ntuning '{variant}' (binary={binary_mode}, keep_general={keep}, bit_margin={margin}, "
        f"{steps} steps x {recipe.texts_per_step} texts)")
    out = train_shared_encoder(base.model.train(), base.tokenizer, settings,
                               [task_data(n, study.specs[n], study.tuning[n]) for n in TUNE], cfg, base=frozen, log=say)
    save_model_folder(models / variant, out.model, base.tokenizer,
                      {"name": f"all-MiniLM-L6-v2-study-{variant}",
                       "training": {"variant": variant, "bit_margin": margin, "steps": out.steps,
                                    "best_step": out.best_step, "best_validation_mean": round(out.best_score, 4)}})
    say(f"'{variant}': best step {out.best_step} of {out.steps}, validation mean {out.best_score:.4f}, "
        f"{out.seconds:.0f} s")
    return out, {"best_step": out.best_step, "steps": out.steps, "seconds": round(out.seconds, 1),
                 "best_validation_mean": round(out.best_score, 4), "history": out.history}


# -- backends -----------------------------------------------------------------------------------------------------
def backend_accuracy(features: Callable[[list[str]], np.ndarray], study: StudyData, caps: StudyCaps,
                     tasks: Sequence[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Linear-head accuracy of one extractor's features on ``tasks``: {task: {"fp32" | "binary": (validation score
    of the chosen C, test score)}}. Every text of every task goes through ``features`` in one call (full length
    buckets); heads train on train, C is chosen on validation, the test score is reported (bench/encode.py and
    bench/int8_variants.py compare backends by it)."""
    groups = [(n, sp) for n in tasks for sp in study.rows[n]]
    texts = [t for n, sp in groups for t in study.rows[n][sp][0]]
    x_all, out, start = features(texts), {}, 0
    feats: dict[str, dict[str, np.ndarray]] = {}
    for n, sp in groups:
        k = len(study.rows[n][sp][0])
        feats.setdefault(n, {})[sp] = x_all[start:start + k]
        start += k
    for n in tasks:
        ml = study.specs[n].kind == "multilabel"
        y = {sp: study.rows[n][sp][1] for sp in study.rows[n]}
        x = feats[n]
        out[n] = {"fp32": probe(x, y, ml, caps.c_grid, with_validation=True),
                  "binary": probe({k: binary(v) for k, v in x.items()}, y, ml, caps.c_grid, with_validation=True)}
    return out
