"""The one save/load pair for heads: ``weights.safetensors`` + ``head.json``. No pickle anywhere."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from encoder.artifacts import ArtifactError, read_versioned_json
from encoder.spec import FeatureSpec, require_same_spec
from encoder.typed_config import ConfigError, build

from .fitted import FittedHead
from .inputs import input_scale
from .modules import Head
from .tasks import TaskConfig

HEAD_FORMAT_VERSION = 1
WEIGHTS, META = "weights.safetensors", "head.json"


def save_head(folder: str | Path, head: FittedHead, spec: FeatureSpec) -> Path:
    """Write one head: weights as safetensors, everything else (task, labels, sizes, metrics, spec) as JSON."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in head.module.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"feature_spec_fingerprint": spec.fingerprint})
    task = asdict(head.task)
    meta = {"format_version": HEAD_FORMAT_VERSION, "task": task, "labels": head.labels,
            "head": {"kind": head.task.head, "dim": head.module.dim, "hidden": head.module.hidden,
                     "n_outputs": head.module.n_outputs},
            "input_scale": input_scale(spec), "thresholds": head.thresholds,
            "feature_spec_fingerprint": spec.fingerprint, "metrics": head.metrics}
    (folder / META).write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return folder


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot write {type(o).__name__} to head.json")


def load_head(folder: str | Path, spec: FeatureSpec | None = None) -> FittedHead:
    """Read one head; with ``spec``, refuse a head trained on features of another spec. A head folder whose parts
    disagree (head.json's sizes vs the weights, label names vs outputs) or whose weights are truncated is an
    ``ArtifactError`` naming the file: it fails here, on the driver, not inside a Spark task."""
    folder = Path(folder)
    meta_path = folder / META
    try:
        meta = read_versioned_json(meta_path, HEAD_FORMAT_VERSION, "head")
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{meta_path} is not valid JSON ({exc}); truncated or edited") from None
    except ValueError as exc:   # a format_version this code does not read
        raise ArtifactError(str(exc)) from None
    fingerprint = meta.get("feature_spec_fingerprint")
    if not isinstance(fingerprint, str):
        raise ArtifactError(f"{meta_path}: feature_spec_fingerprint = {fingerprint!r}; expected a string")
    if spec is not None:
        require_same_spec(spec.fingerprint, fingerprint, f"head {folder.name!r}")
        if float(meta.get("input_scale", 1.0)) != input_scale(spec):
            raise ArtifactError(f"{meta_path}: trained on inputs scaled by {meta.get('input_scale', 1.0)}, but this "
                                f"code feeds heads of this spec inputs scaled by {input_scale(spec)}; retrain the head")
    try:  # the same validated builder as the YAML config, so a saved task is checked like a written one
        task = build(TaskConfig, meta.get("task"), source=str(meta_path), prefix="task.")
    except ConfigError as exc:
        raise ArtifactError(str(exc)) from None
    dim, n_outputs, hidden = _sizes(meta, task, meta_path)
    if spec is not None and dim != spec.dim:
        raise ArtifactError(f"{meta_path}: head.dim = {dim}, but its feature spec has {spec.dim} dimensions")
    labels = _labels(meta, task, n_outputs, meta_path)
    thresholds = _thresholds(meta, n_outputs, meta_path)
    tensors = _read_weights(folder / WEIGHTS, fingerprint)
    _check_shapes(tensors, _expected_shapes(dim, n_outputs, hidden), folder / WEIGHTS,
                  f"head.json's sizes (dim {dim}, hidden {hidden}, n_outputs {n_outputs})")
    module = Head(dim, n_outputs, hidden)
    module.load_state_dict(tensors)
    module.eval()
    return FittedHead(task, module, labels, meta.get("metrics", {}), thresholds, fingerprint)


def _sizes(meta: dict, task: TaskConfig, meta_path: Path) -> tuple[int, int, int]:
    """head.json's ``head`` sizes, checked against its task: (dim, n_outputs, hidden)."""
    h = meta.get("head")
    if not isinstance(h, dict):
        raise ArtifactError(f"{meta_path}: head = {h!r}; expected a mapping with dim, n_outputs and hidden")
    sizes = []
    for key, low in (("dim", 1), ("n_outputs", 1), ("hidden", 0)):
        v = h.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ArtifactError(f"{meta_path}: head.{key} = {v!r}; expected an integer >= {low}")
        sizes.append(v)
    dim, n_outputs, hidden = sizes
    want_hidden = task.hidden if task.head == "mlp" else 0
    if hidden != want_hidden:
        raise ArtifactError(f"{meta_path}: head.hidden = {hidden}, but its task is a {task.head} head"
                            + (f" of hidden = {task.hidden}" if task.head == "mlp" else " (no hidden layer)"))
    if task.kind == "binary" and n_outputs != 1:
        raise ArtifactError(f"{meta_path}: head.n_outputs = {n_outputs}; a binary head has 1")
    return dim, n_outputs, hidden


def _labels(meta: dict, task: TaskConfig, n_outputs: int, meta_path: Path) -> list[str]:
    """One name per output (binary: the negative and the positive label); fewer would fail inside a Spark task,
    more would publish a label that can never be predicted."""
    labels = meta.get("labels")
    if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
        raise ArtifactError(f"{meta_path}: labels = {labels!r}; expected a list of names")
    want = 2 if task.kind == "binary" else n_outputs
    if len(labels) != want:
        raise ArtifactError(f"{meta_path}: {len(labels)} label names for a {task.kind} head of {n_outputs} "
                            f"output{'s' if n_outputs != 1 else ''}; expected {want}")
    if len(set(labels)) != len(labels):
        raise ArtifactError(f"{meta_path}: labels = {labels} names a label twice")
    return list(labels)


def _thresholds(meta: dict, n_outputs: int, meta_path: Path) -> list[float] | None:
    t = meta.get("thresholds")
    if t is None:
        return None
    if not isinstance(t, list) or len(t) != n_outputs or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in t):
        raise ArtifactError(f"{meta_path}: thresholds = {t!r}; expected {n_outputs} numbers (one per output)")
    return [float(v) for v in t]


def _read_weights(weights: Path, fingerprint: str) -> dict[str, Any]:
    """Every tensor of ``weights.safetensors``: a missing, truncated or garbage file is an ArtifactError."""
    if not weights.is_file():
        raise ArtifactError(f"{weights} is missing")
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = (f.metadata() or {}).get("feature_spec_fingerprint")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - SafetensorError and OSError alike: the file cannot be read
        problem = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ArtifactError(f"{weights} is not a readable safetensors file ({problem}); truncated or "
                            "edited") from exc
    if stored is not None and stored != fingerprint:
        raise ArtifactError(f"{weights} was saved for feature spec {stored[:12]}, but head.json names "
                            f"{fingerprint[:12]}; the folder mixes two heads")
    return tensors


def _expected_shapes(dim: int, n_outputs: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """The tensors ``Head(dim, n_outputs, hidden)`` holds, computed without building it (a head.json naming huge
    sizes allocates nothing before the weights are checked)."""
    if hidden:
        return {"first.weight": (hidden, dim), "first.bias": (hidden,), "out.weight": (n_outputs, hidden),
                "out.bias": (n_outputs,)}
    return {"out.weight": (n_outputs, dim), "out.bias": (n_outputs,)}


def _check_shapes(tensors: dict[str, Any], expected: dict[str, tuple[int, ...]], weights: Path, what: str) -> None:
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ArtifactError(f"{weights} holds tensors {sorted(tensors)}; {what} need {sorted(expected)}")
    for name, shape in expected.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise ArtifactError(f"{weights}: {name} has shape {list(t.shape)}; {what} need {list(shape)}")
        if not t.is_floating_point():
            raise ArtifactError(f"{weights}: {name} is {t.dtype}; expected floating-point weights")
        if not bool(t.isfinite().all()):
            raise ArtifactError(f"{weights}: {name} holds non-finite values (NaN or inf)")


def load_heads(folder: str | Path, spec: FeatureSpec | None = None) -> list[FittedHead]:
    """Every head under ``folder`` (one sub-folder per task), in name order."""
    root = Path(folder)
    subs = sorted(p for p in root.iterdir() if (p / META).is_file()) if root.is_dir() else []
    if not subs:
        raise ArtifactError(f"no heads under {root} (expected sub-folders holding {META})")
    return [load_head(p, spec) for p in subs]


def heads_fingerprint(folder: str | Path) -> str:
    """sha256 over every file of a heads folder (each head's head.json and weights, by relative path): equal
    fingerprints mean the same heads, so their predictions on an unchanged code are the same."""
    import hashlib

    from encoder.hashing import file_sha256

    root = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.parent != root):
        h.update(str(f.relative_to(root)).encode() + b"\0" + bytes.fromhex(file_sha256(f)))
    return h.hexdigest()
