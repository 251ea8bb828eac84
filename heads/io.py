"""The one save/load pair for heads: ``weights.safetensors`` + ``head.json``. No pickle anywhere."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file

from encoder.spec import FeatureSpec, require_same_spec

from .modules import Head
from .tasks import TaskConfig
from .train import TrainedHead

HEAD_FORMAT_VERSION = 1
WEIGHTS, META = "weights.safetensors", "head.json"


def save_head(folder: str | Path, head: TrainedHead, spec: FeatureSpec) -> Path:
    """Write one head: weights as safetensors, everything else (task, labels, sizes, metrics, spec) as JSON."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in head.module.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"feature_spec_fingerprint": spec.fingerprint})
    task = asdict(head.task)
    meta = {"format_version": HEAD_FORMAT_VERSION, "task": task, "labels": head.labels,
            "head": {"kind": head.task.head, "dim": head.module.dim, "hidden": head.module.hidden,
                     "n_outputs": head.module.n_outputs},
            "thresholds": head.thresholds, "feature_spec_fingerprint": spec.fingerprint, "metrics": head.metrics}
    (folder / META).write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return folder


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot write {type(o).__name__} to head.json")


def load_head(folder: str | Path, spec: FeatureSpec | None = None) -> TrainedHead:
    """Read one head; with ``spec``, refuse a head trained on features of another spec."""
    folder = Path(folder)
    meta_path = folder / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"no head at {folder} ({META} missing)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != HEAD_FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version = {meta.get('format_version')!r}; this code reads "
                         f"{HEAD_FORMAT_VERSION}")
    if spec is not None:
        require_same_spec(spec.fingerprint, meta["feature_spec_fingerprint"], f"head {folder.name!r}")
    t = meta["task"]
    task = TaskConfig(name=t["name"], kind=t["kind"], columns=tuple(t["columns"]), labels=tuple(t["labels"]),
                      head=t["head"], hidden=t["hidden"], class_weights=t["class_weights"],
                      tune_thresholds=t.get("tune_thresholds", True))
    h = meta["head"]
    module = Head(h["dim"], h["n_outputs"], h["hidden"])
    module.load_state_dict(load_file(str(folder / WEIGHTS)))
    module.eval()
    return TrainedHead(task, module, list(meta["labels"]), meta.get("metrics", {}), meta.get("thresholds"),
                       meta["feature_spec_fingerprint"])


def load_heads(folder: str | Path, spec: FeatureSpec | None = None) -> list[TrainedHead]:
    """Every head under ``folder`` (one sub-folder per task), in name order."""
    root = Path(folder)
    subs = sorted(p for p in root.iterdir() if (p / META).is_file()) if root.is_dir() else []
    if not subs:
        raise FileNotFoundError(f"no heads under {root} (expected sub-folders holding {META})")
    return [load_head(p, spec) for p in subs]
