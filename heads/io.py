"""The one save/load pair for heads: ``weights.safetensors`` + ``head.json``. No pickle anywhere."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file

from encoder.artifacts import read_versioned_json
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
    """Read one head; with ``spec``, refuse a head trained on features of another spec."""
    folder = Path(folder)
    meta_path = folder / META
    meta = read_versioned_json(meta_path, HEAD_FORMAT_VERSION, "head")
    if spec is not None:
        require_same_spec(spec.fingerprint, meta["feature_spec_fingerprint"], f"head {folder.name!r}")
        if float(meta.get("input_scale", 1.0)) != input_scale(spec):
            raise ValueError(f"{meta_path}: trained on inputs scaled by {meta.get('input_scale', 1.0)}, but this code "
                             f"feeds heads of this spec inputs scaled by {input_scale(spec)}; retrain the head")
    try:  # the same validated builder as the YAML config, so a saved task is checked like a written one
        task = build(TaskConfig, meta["task"], source=str(meta_path), prefix="task.")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    h = meta["head"]
    module = Head(h["dim"], h["n_outputs"], h["hidden"])
    module.load_state_dict(load_file(str(folder / WEIGHTS)))
    module.eval()
    return FittedHead(task, module, list(meta["labels"]), meta.get("metrics", {}), meta.get("thresholds"),
                       meta["feature_spec_fingerprint"])


def load_heads(folder: str | Path, spec: FeatureSpec | None = None) -> list[FittedHead]:
    """Every head under ``folder`` (one sub-folder per task), in name order."""
    root = Path(folder)
    subs = sorted(p for p in root.iterdir() if (p / META).is_file()) if root.is_dir() else []
    if not subs:
        raise FileNotFoundError(f"no heads under {root} (expected sub-folders holding {META})")
    return [load_head(p, spec) for p in subs]


def heads_fingerprint(folder: str | Path) -> str:
    """sha256 over every file of a heads folder (each head's head.json and weights, by relative path): equal
    fingerprints mean the same heads, so their predictions on an unchanged code are the same."""
    import hashlib

    root = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.parent != root):
        h.update(str(f.relative_to(root)).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()
