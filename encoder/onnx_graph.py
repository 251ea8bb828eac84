"""The ONNX backends: the one forward function exported to an ONNX graph (pooling inside), optionally quantised to
int8, cached on disk per model and settings, and run by ONNX Runtime on the CPU.

Why: on a CPU the encoder is the pipeline's whole cost, and ONNX Runtime runs the same fp32 graph faster than eager
torch, and int8 weights faster again (docs/backends.md has the measured table). The graph is traced through
``encoder.forward.pooled_features``, so padding, masking and pooling are the ones every other path uses; only the
matrix products change precision under ``onnx_int8``.

The graph depends on the model's weights, the pooling settings (layers, combination, pooling, normalisation), the
backend and its recipe, and the exporter's versions; it does not depend on max_length or the long-text windows (the
sequence axis is dynamic and windows are pooled outside). Those make its cache key. A cache entry is a folder
``<cache>/<key>/`` holding ``graph.onnx`` and ``graph.json`` (the key's parts and the graph's sha256); it is written
to a temporary folder and renamed into place under a file lock, so two workers building at once never read half a
graph, and an entry whose graph no longer matches its sha256 is rebuilt.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .backends import INT8_VARIANTS, ONNX_INT8, OPSET, Int8Recipe, backend_recipe
from .features import FeatureSettings
from .forward import pooled_features
from .hashing import file_sha256

logger = logging.getLogger(__name__)

GRAPH = "graph.onnx"
GRAPH_JSON = "graph.json"
DEFAULT_CACHE = Path("~/.cache/text-embed-pipeline/onnx")
CACHE_ENV = "TEXT_EMBED_ONNX_CACHE"


def cache_dir(configured: str | None = None) -> Path:
    """Where graphs are cached: ``encoder.graph_cache``, else $TEXT_EMBED_ONNX_CACHE, else
    ~/.cache/text-embed-pipeline/onnx (one per machine; each Spark worker host builds its own once)."""
    return Path(configured or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def graph_key(fingerprint: dict[str, str], settings: FeatureSettings, variant: str | None = None) -> dict[str, Any]:
    """Everything the graph's bytes depend on (see the module docstring)."""
    import onnx
    import onnxruntime

    s = settings.to_json()
    return {"model_sha256": fingerprint["sha256"], "backend": settings.backend,
            "recipe": backend_recipe(settings.backend, variant),
            "pooling": {k: s[k] for k in ("layers", "layer_combine", "pooling", "normalize")},
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}}


def graph_for(loaded: Any, settings: FeatureSettings, cache: str | None = None, variant: str | None = None) -> Path:
    """The cached graph of ``loaded`` under ``settings`` (layers resolved; backend onnx or onnx_int8), built once."""
    key = graph_key(loaded.fingerprint, settings, variant)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    root = cache_dir(cache)
    entry = root / f"{settings.backend}-{digest}"
    if _valid(entry, key):
        return entry / GRAPH
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{entry.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # another worker may be building the same graph
        if _valid(entry, key):
            return entry / GRAPH
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=root))
        try:
            _build(loaded, settings, key, tmp, variant)
            if entry.exists():                    # a damaged entry: replaced, never half-read
                shutil.rmtree(entry)
            os.replace(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("built the %s graph %s", settings.backend, entry)
    return entry / GRAPH


def _valid(entry: Path, key: dict[str, Any]) -> bool:
    try:
        meta = json.loads((entry / GRAPH_JSON).read_text(encoding="utf-8"))
        ok = meta.get("key") == key and meta.get("sha256") == file_sha256(entry / GRAPH)
    except (OSError, ValueError):
        return False
    if not ok:
        logger.warning("the cached graph %s does not match its record; rebuilding it", entry)
    return ok


def _build(loaded: Any, settings: FeatureSettings, key: dict[str, Any], folder: Path, variant: str | None) -> None:
    fp32 = folder / ("fp32.onnx" if settings.backend == "onnx_int8" else GRAPH)
    export_graph(loaded.model, settings, fp32)
    if settings.backend == "onnx_int8":
        quantize_graph(fp32, folder / GRAPH, INT8_VARIANTS[variant or ONNX_INT8], loaded.num_layers)
        fp32.unlink()
    (folder / GRAPH_JSON).write_text(json.dumps({"key": key, "sha256": file_sha256(folder / GRAPH)}, indent=2)
                                     + "\n", encoding="utf-8")


class Pooled(torch.nn.Module):
    """(ids, mask) -> pooled features through the one forward function: the module torch.onnx traces."""

    def __init__(self, model: Any, settings: FeatureSettings) -> None:
        super().__init__()
        self.model, self.settings = model, settings

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.model, ids, mask, self.settings)


def export_graph(model: Any, settings: FeatureSettings, path: Path) -> None:
    """Trace ``pooled_features`` of ``model`` into an fp32 ONNX graph (dynamic batch and sequence axes).

    The example batch has a padded row, so the traced graph keeps the attention mask's path (a graph traced on an
    all-ones mask could drop it); eager attention is used for the trace (SDPA's mask shortcuts do not export).
    """
    import warnings

    vocab = int(model.config.vocab_size)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, 0, 0, 0]], dtype=torch.long) % vocab
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.long)
    previous = getattr(model.config, "_attn_implementation", None)
    if previous not in (None, "eager"):
        model.set_attn_implementation("eager")
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")       # the tracer's notes on Python branches of transformers' code
            torch.onnx.export(Pooled(model, settings).eval(), (ids, mask), str(path),
                              input_names=["input_ids", "attention_mask"], output_names=["features"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"}, "features": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
    finally:
        if previous not in (None, "eager"):
            model.set_attn_implementation(previous)


def quantize_graph(src: Path, dst: Path, recipe: Int8Recipe, num_layers: int) -> None:
    """fp32 graph -> int8 weights by ONNX Runtime's dynamic quantisation under ``recipe``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    patterns = [re.compile(p.replace("{last}", str(num_layers - 1))) for p in recipe.fp32_nodes]
    names = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node if n.op_type == "MatMul"]
    keep = [n for n in names if any(p.search(n) for p in patterns)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)     # its advice to pre-process is logged on the root logger at every call
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=recipe.per_channel,
                         nodes_to_exclude=keep)
    finally:
        root.setLevel(level)


class OnnxRunner:
    """One ONNX Runtime session on the CPU with the task's thread count: (ids, mask) int64 -> float32[b, dim]."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def runner_for(loaded: Any, settings: FeatureSettings, threads: int, cache: str | None = None,
               variant: str | None = None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The runner of ``settings.backend`` for ``loaded`` (its graph built or found in the cache)."""
    return OnnxRunner(graph_for(loaded, settings, cache, variant), threads)
