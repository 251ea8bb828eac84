"""The one forward function: token ids -> pooled float features, for inference and tuning alike.

nanoGPT's ``GPT.forward`` serves training and generation; ours serves the extractor (under inference mode), tuning
(with gradients), teachers' logits and any export: padding, masking and pooling change here and nowhere else.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch

from .features import FeatureSettings
from .pooling import pool_layers

Autocast = Literal["none", "fp16", "bf16"]
_AMP = {"fp16": torch.float16, "bf16": torch.bfloat16}


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int, device: str | torch.device = "cpu"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids int64[b, t], mask int64[b, t]; 1 = real token), right-padded to the longest row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def pooled_features(model: Any, ids: torch.Tensor, mask: torch.Tensor, settings: FeatureSettings,
                    autocast: Autocast = "none") -> torch.Tensor:
    """(ids, mask) int64[b, t] -> pooled float32[b, dim] as ``settings`` (layers resolved) say.

    Gradients flow when the caller allows them (tuning); the extractor calls it under inference mode. ``autocast``
    applies on CUDA only (CPU runs fp32); pooling is done in float32 either way. Only the last layer's states are
    asked for when the settings use nothing else.
    """
    num_layers = int(model.config.num_hidden_layers)
    only_last = tuple(settings.layers) == (num_layers,)
    dtype = _AMP.get(autocast)
    with torch.autocast(device_type="cuda", dtype=dtype, enabled=dtype is not None and ids.is_cuda):
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=not only_last)
    hidden = {num_layers: out.last_hidden_state} if only_last else out.hidden_states
    return pool_layers(hidden, mask, settings.layers, settings.pooling,  # type: ignore[arg-type]
                       settings.layer_combine, settings.normalize)  # type: ignore[arg-type]


def batch_features(model: Any, rows: Sequence[Sequence[int]], pad_id: int, settings: FeatureSettings,
               autocast: Autocast = "none") -> torch.Tensor:
    """One batch of token id lists -> pooled float32[b, dim] on the model's device (pad, then forward)."""
    device = next(model.parameters()).device
    ids, mask = pad_ids(rows, pad_id, device)
    return pooled_features(model, ids, mask, settings, autocast)
