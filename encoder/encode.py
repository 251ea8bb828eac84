"""Texts -> pooled float features -> stored codes, in one process (what each Spark worker runs).

Speed comes from: duplicate texts folded, length-bucketed batches under a token budget, inference mode, and on GPU
autocast to fp16/bf16 with a larger budget. Results always come back in input order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .batching import plan_batches, restore_order, unique_texts
from .encoder_config import EncoderConfig
from .model import LoadedEncoder
from .forward import batch_features, pad_ids
from .spec import FeatureSpec, feature_part
from .typed_config import ConfigError
from .windows import pool_windows, window_starts, window_weights

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Features:
    """Float features for a list of texts, in input order."""

    values: np.ndarray      # float32[n, dim]
    n_tokens: np.ndarray    # int32[n]: tokens before truncation, special tokens included
    truncated: np.ndarray   # bool[n]: part of the text was not encoded (truncate: n_tokens > max_length; chunks: cut
                            # by max_chunks)


@dataclass(frozen=True)
class Codes:
    """Stored codes for a list of texts, in input order."""

    codes: np.ndarray       # uint8[n, n_bytes]
    n_tokens: np.ndarray    # int32[n]
    truncated: np.ndarray   # bool[n]


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], np.ndarray]:
    """The one tokenisation: texts -> (input ids with special tokens, truncated to ``max_length``; full token counts
    int32[n] before truncation). Only the texts over the limit are tokenised a second time, with truncation."""
    full = tokenizer(list(texts), add_special_tokens=True, truncation=False, return_attention_mask=False,
                     return_token_type_ids=False, verbose=False)["input_ids"]
    counts = np.fromiter((len(x) for x in full), dtype=np.int32, count=len(full))
    long_rows = np.flatnonzero(counts > max_length)
    if len(long_rows):
        cut = tokenizer([texts[i] for i in long_rows], add_special_tokens=True, truncation=True,
                        max_length=max_length, return_attention_mask=False, return_token_type_ids=False)
        for i, ids in zip(long_rows, cut["input_ids"]):
            full[i] = ids
    return full, counts


class FeatureExtractor:
    """Runs the encoder and pools features as ``cfg`` says (the part of a spec that needs the model).

    Built from the one ``EncoderConfig`` (one set of defaults). Settings the model cannot honour (a layer it does not
    have, a max_length beyond its positions) raise ConfigError naming the key, so a job fails before Spark starts.
    Under ``backend: onnx`` / ``onnx_int8`` the batches go to an ONNX Runtime session of the same forward function
    (``encoder/onnx_graph.py``); tokenising, windows, dedup and batching are this class's either way. ``runner``
    replaces that session (a study comparing graphs).
    """

    def __init__(self, loaded: LoadedEncoder, cfg: EncoderConfig = EncoderConfig(),
                 runner: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None):
        source = f"model {loaded.fingerprint['name']}"
        f = cfg.features
        model_max = int(getattr(loaded.model.config, "max_position_embeddings", f.max_length))
        if not 2 < f.max_length <= model_max:
            raise ConfigError(source, "encoder.max_length", f"= {f.max_length}; this model allows 3..{model_max}")
        if f.chunks and f.chunk_tokens > model_max:
            raise ConfigError(source, "encoder.chunk_tokens", f"= {f.chunk_tokens}; this model allows 3..{model_max}")
        self.loaded = loaded
        if f.chunks:
            prefix, suffix = self._special_tokens()
            content = f.chunk_tokens - len(prefix) - len(suffix)
            if not 1 <= f.chunk_stride <= content:
                raise ConfigError(source, "encoder.chunk_stride", f"= {f.chunk_stride}; with "
                                  f"{len(prefix) + len(suffix)} "
                                  f"special tokens per window this model allows 1..{content}")
        try:
            self.settings = f.resolve(loaded.num_layers)      # layers as hidden-state indices
        except ValueError as exc:
            shown = list(f.layers) if isinstance(f.layers, tuple) else f.layers
            raise ConfigError(source, "encoder.layers", f"= {shown!r}: {exc}") from None
        on_gpu = loaded.device.startswith("cuda")
        self.cfg = cfg
        self.token_budget = cfg.gpu_token_budget if on_gpu else cfg.token_budget
        self.max_batch_rows = cfg.max_batch_rows * (8 if on_gpu else 1)
        if f.backend == "onnx_int8":
            # its activations are quantised with one scale per input tensor, so a batch mate would change a text's
            # code; one text per forward pass keeps every code a function of its own text (a full run, an
            # incremental run and the library agree byte for byte), at 0.9x the batched speed (docs/backends.md)
            self.max_batch_rows = 1
        self.autocast = cfg.autocast if on_gpu else "none"
        self.dim = self.settings.dim(loaded.hidden_size)
        self.runner = runner
        if runner is None and self.settings.backend != "torch":
            if on_gpu:
                raise ConfigError(source, "encoder.backend", f"= {self.settings.backend!r} runs on the CPU; this "
                                  f"encoder is on {loaded.device} (use backend: torch there)")
            from .onnx_graph import runner_for

            self.runner = runner_for(loaded, self.settings, torch.get_num_threads(), cfg.graph_cache)

    def feature_part(self) -> dict:
        """The feature part of a spec this extractor reproduces (see ``FeatureSpec.feature_part``)."""
        return feature_part(self.loaded.fingerprint, self.settings, self.dim)

    # -- tokenization -----------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """-> (input ids truncated to max_length, full token counts int32[n] before truncation)."""
        return tokenize(self.loaded.tokenizer, texts, self.settings.max_length)

    def windows(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Long-text windows -> (window ids, owner int64[w], weights float64[w], token counts int32[n], cut bool[n]).

        Windows 0..n-1 are the texts' first windows, in text order (so short texts batch exactly as under
        ``truncate``); the further windows of long texts follow. Token counts include the special tokens, as under
        ``truncate``; ``cut`` marks texts the ``max_chunks`` cap cut short.
        """
        tok = self.loaded.tokenizer
        content_ids = tok(list(texts), add_special_tokens=False, truncation=False, return_attention_mask=False,
                          return_token_type_ids=False, verbose=False)["input_ids"]
        prefix, suffix = self._special_tokens()
        content = self.settings.chunk_tokens - len(prefix) - len(suffix)
        first: list[list[int]] = []
        more: list[list[int]] = []
        owner_more: list[int] = []
        weights_first = np.empty(len(texts), np.float64)
        weights_more: list[np.ndarray] = []
        cut = np.zeros(len(texts), bool)
        for i, ids in enumerate(content_ids):
            starts, cut[i] = window_starts(len(ids), content, self.settings.chunk_stride,
                                          self.settings.max_chunks)
            w = window_weights(starts, content, len(ids))
            first.append(prefix + ids[:content] + suffix)
            weights_first[i] = w[0]
            for s in starts[1:]:
                more.append(prefix + ids[s:s + content] + suffix)
                owner_more.append(i)
            weights_more.append(w[1:])
        counts = np.fromiter((len(x) + len(prefix) + len(suffix) for x in content_ids), dtype=np.int32,
                             count=len(content_ids))
        owner = np.concatenate([np.arange(len(texts)), np.asarray(owner_more, np.int64)]).astype(np.int64)
        weights = np.concatenate([weights_first, *weights_more]) if weights_more else weights_first
        return first + more, owner, weights, counts, cut

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a text's content (BERT: [CLS] / [SEP]), found by tokenizing
        a probe text with and without them, so each window gets exactly the wrapping a whole text gets."""
        tok = self.loaded.tokenizer
        with_special = tok("hello world", add_special_tokens=True)["input_ids"]
        bare = tok("hello world", add_special_tokens=False)["input_ids"]
        for k in range(len(with_special) - len(bare) + 1):
            if with_special[k:k + len(bare)] == bare:
                return with_special[:k], with_special[k + len(bare):]
        raise ValueError("cannot find how this tokenizer wraps a text in special tokens")

    # -- features ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _forward(self, batch_ids: list[list[int]]) -> torch.Tensor:
        """One batch (one length, so no padding) -> pooled float32[b, dim] on the model's device."""
        pad_id = self.loaded.tokenizer.pad_token_id or 0
        if self.runner is not None:
            ids, mask = pad_ids(batch_ids, pad_id)
            return torch.from_numpy(self.runner(ids.numpy(), mask.numpy()))
        return batch_features(self.loaded.model, batch_ids, pad_id, self.settings,
                              self.autocast)  # type: ignore[arg-type]

    def encode_ids(self, ids: list[list[int]], n_first: int) -> np.ndarray:
        """Token id lists -> pooled float32[len(ids), dim], in order, in length-bucketed batches under the budget.

        The first ``n_first`` lists (each text's first window, its only one when short) are batched exactly as under
        truncate; further windows of long texts get batches of their own, so they never change a short text's batch
        (and so its bits).
        """
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        batches = plan_batches(lengths[:n_first], self.token_budget, self.max_batch_rows)
        if len(ids) > n_first:
            batches += [b + n_first for b in plan_batches(lengths[n_first:], self.token_budget, self.max_batch_rows)]
        parts = [self._forward([ids[i] for i in b]).float().cpu().numpy() for b in batches]
        return restore_order(parts, batches, len(ids))

    def features(self, texts: Sequence[str]) -> Features:
        """Texts -> float32[n, dim] features with token counts and truncation flags, in input order."""
        n = len(texts)
        if n == 0:
            return Features(np.zeros((0, self.dim), np.float32), np.zeros(0, np.int32), np.zeros(0, bool))
        uniq, inverse = unique_texts(texts)
        if self.settings.chunks:
            ids, owner, weights, counts, cut = self.windows(uniq)
            values = pool_windows(self.encode_ids(ids, len(uniq)), owner, weights, len(uniq),
                                  self.settings.normalize)
        else:
            ids, counts = self.tokenize(uniq)
            cut = counts > self.settings.max_length
            values = self.encode_ids(ids, len(ids))
        return Features(values[inverse], counts[inverse], cut[inverse])

    def check_spec(self, spec: FeatureSpec) -> None:
        """Refuse a spec this extractor would not reproduce (other model, layers, pooling, ...)."""
        spec.check_features(self.feature_part(), "this encoder")

    def encode(self, texts: Sequence[str], spec: FeatureSpec) -> Codes:
        """Texts -> stored codes under ``spec`` (checked against this extractor), in input order."""
        f = self.features(texts)
        return Codes(spec.encode_features(f.values), f.n_tokens, f.truncated)
