"""FLOP counts against hand arithmetic, attention included (the CPU flash kernel would count 0)."""

from __future__ import annotations

import torch
from torch import nn

from streamseg.flops import count_flops, count_params
from streamseg.models import MemoryTCN


def test_attention_is_counted_in_full() -> None:
    t, e = 100, 64
    x = torch.randn(1, t, e)
    mha = nn.MultiheadAttention(e, num_heads=4, batch_first=True).eval()
    # 4 projections (q, k, v, out): 4 * T * E * E MACs; scores and weighted sum: 2 * T * T * E MACs
    assert count_flops(mha, (x, x, x)) == 2 * (4 * t * e * e + 2 * t * t * e)

    class SDPA(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)

    # causal attention is counted as the full T x T product, as the kernel computes it
    assert count_flops(SDPA(), (torch.randn(1, 1, t, e),)) == 2 * 2 * t * t * e


def test_memtcn_flops_per_frame_match_the_arithmetic_for_any_chunk() -> None:
    from streamseg.deploy.bench import model_cost

    d, k, maps, layers = 6, 5, 8, 3
    net = MemoryTCN(d, k, num_stages=1, num_layers=layers, num_maps=maps)
    # per output frame: 1x1 in (D -> maps), per layer a k=3 conv and a 1x1 (maps -> maps), 1x1 out (maps -> K)
    macs_per_frame = d * maps + layers * (3 * maps * maps + maps * maps) + maps * k
    for chunk in (1, 4, 16):  # the cached context makes a chunk's cost exactly chunk x one frame's
        cost = model_cost(net, (d,), chunk)
        assert cost["flops_per_forward"] == 2 * macs_per_frame * chunk
        assert cost["macs_per_frame"] == macs_per_frame
    bias = maps + layers * 2 * maps + k
    assert count_params(net) == macs_per_frame + bias
