"""FLOP counts of an encoder pass and of heads: a hand count for a tiny config, and torch's own counter on a real
forward pass of the tiny BERT (every matrix product, texts of different lengths)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from planning.flops import Architecture, encoder_flops, head_flops


def test_hand_count_for_a_tiny_config():
    arch = Architecture(layers=2, hidden=32, intermediate=37)
    # per layer and 10-token text: 4 projections 4*2*10*32*32 = 81,920; scores + context 2*2*10*10*32 = 12,800;
    # feed-forward 2*2*10*32*37 = 47,360 -> 142,080; 2 layers, 3 texts
    assert encoder_flops(arch, [10, 10, 10]) == 3 * 2 * 142_080
    assert encoder_flops(arch, 10) == 2 * 142_080
    assert head_flops(384, 4) == 3_072 and head_flops(384, 4, hidden=128) == 2 * 384 * 128 + 2 * 128 * 4


def test_matches_torch_flop_counter_on_the_tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=34, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=512, attn_implementation="eager")   # torch's counter does not see the
    # fused CPU attention kernel (sdpa); the eager path computes the same products one by one
    model = BertModel(cfg, add_pooling_layer=False).eval()
    lengths = [5, 17, 40]
    counted = 0
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        for t in lengths:                                   # one text at a time: no padding counted
            ids = torch.randint(5, 30, (1, t))
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        counted = fc.get_total_flops()
    assert counted == encoder_flops(Architecture.of(cfg), lengths)
    assert encoder_flops(Architecture.of(cfg, layers=1), lengths) == counted / 2   # a student keeping one layer
