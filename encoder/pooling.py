"""Multi-layer feature extraction: choose layers, pool positions under the padding mask, combine layers.

As in Du et al. (2020), features are pooled from several transformer layers; each chosen layer is pooled over its
real (unpadded) positions, then the layers are concatenated or averaged, then optionally L2-normalised.
"""
from __future__ import annotations

from typing import Literal, Sequence, get_args

import numpy as np
import torch

Pooling = Literal["cls", "mean", "max", "mean_sqrt_len"]
LayerCombine = Literal["concat", "mean"]
LayerPreset = Literal["last", "last4", "all"]

POOLING_MODES: tuple[str, ...] = get_args(Pooling)
# How each mode reads in the data dictionary (jobs.describe): a new mode is added to Pooling, here, and in
# pool_positions.
POOLING_WORDS = {"cls": "the first ([CLS]) token", "mean": "mean-pooled over the tokens",
                 "max": "max-pooled over the tokens",
                 "mean_sqrt_len": "summed over the tokens and divided by the square root of their number"}
assert set(POOLING_WORDS) == set(POOLING_MODES)
LAYER_COMBINES: tuple[str, ...] = get_args(LayerCombine)
LAYER_PRESETS: tuple[str, ...] = get_args(LayerPreset)


def resolve_layers(layers: str | Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Turn a preset or explicit list into hidden-state indices (1..num_layers; 0 = the embedding output).

    Negative indices count from the last layer (-1 = last), as in Python.
    """
    if isinstance(layers, str):
        if layers == "last":
            return (num_layers,)
        if layers == "last4":
            return tuple(range(max(1, num_layers - 3), num_layers + 1))
        if layers == "all":
            return tuple(range(1, num_layers + 1))
        raise ValueError(f"layers = {layers!r}; expected one of {', '.join(map(repr, LAYER_PRESETS))} or a list "
                         f"of layer indices in 0..{num_layers} (negative counts from the last)")
    out = []
    for i in layers:
        j = num_layers + 1 + i if i < 0 else i
        if not 0 <= j <= num_layers:
            raise ValueError(f"layers contains {i}; a model with {num_layers} layers allows 0..{num_layers} "
                             f"or -{num_layers + 1}..-1")
        out.append(j)
    if not out:
        raise ValueError("layers is empty; name at least one layer")
    if len(set(out)) != len(out):
        raise ValueError(f"layers {list(layers)} names a layer twice")
    return tuple(out)


def feature_dim(hidden_size: int, n_layers: int, combine: LayerCombine) -> int:
    """Width of the pooled feature vector."""
    return hidden_size * n_layers if combine == "concat" else hidden_size


def pool_positions(hidden: torch.Tensor, mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """Pool one layer over positions: float[n, t, d], mask int[n, t] (1 = real token) -> float[n, d].

    ``cls`` takes position 0; ``mean`` averages real tokens only; ``max`` ignores padded positions, so a large value
    on a pad token never leaks into the result; ``mean_sqrt_len`` divides the sum of the real tokens by the square
    root of their number (sentence-transformers' ``mean_sqrt_len_tokens``: longer texts keep a larger norm). Runs on
    whatever device the tensors are on.
    """
    if mode == "cls":
        return hidden[:, 0, :]
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (n, t, 1)
    if mode == "mean":
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    if mode == "mean_sqrt_len":
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9).sqrt()
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).amax(dim=1)
    raise ValueError(f"pooling = {mode!r}; expected one of {', '.join(map(repr, POOLING_MODES))}")


def pool_layers(hidden: Sequence[torch.Tensor | np.ndarray], mask: torch.Tensor | np.ndarray, layers: Sequence[int],
                mode: Pooling, combine: LayerCombine, normalize: bool) -> torch.Tensor:
    """Pool the chosen layers and combine them: hidden[l] float[n, t, d] -> float32[n, D].

    ``hidden`` is the full hidden-state list (index 0 = embeddings). D = d * len(layers) for concat, d for mean.
    Pooling is done in float32 even under fp16/bf16 autocast, so sums over long texts do not lose precision.
    """
    mask_t = torch.as_tensor(mask)
    pooled = [pool_positions(torch.as_tensor(hidden[i]).float(), mask_t, mode) for i in layers]
    if combine == "concat":
        out = torch.cat(pooled, dim=1)
    elif combine == "mean":
        out = torch.stack(pooled, dim=0).mean(dim=0)
    else:
        raise ValueError(f"layer_combine = {combine!r}; expected one of {', '.join(map(repr, LAYER_COMBINES))}")
    if normalize:
        out = torch.nn.functional.normalize(out, p=2, dim=1)
    return out
