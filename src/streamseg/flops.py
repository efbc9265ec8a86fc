"""Parameter and FLOP counts of a model, attention included.

``count_flops`` runs the model once under ``torch.utils.flop_counter.FlopCounterMode`` and returns its
total: floating-point operations with a multiply-add counted as 2 (so MACs = FLOPs / 2). Two traps of
FlopCounterMode are closed here (docs: /work/shared/notes/ecosystem.md, section 8):

* CPU ``scaled_dot_product_attention`` dispatches to a flash kernel that has no FLOP formula and counts
  0; the count runs under ``sdpa_kernel(SDPBackend.MATH)``, whose matmuls are counted (causal attention
  counts the full T x T product, as the kernel computes it).
* ``nn.MultiheadAttention``'s inference fast path (``_native_multi_head_attention``) is not counted in
  full either; the fast path is switched off for the count.

Convolutions, linear layers and matmuls are counted; elementwise ops (ReLU, softmax, adds, BatchNorm in
eval mode) are not, as is usual in papers.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_params"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@contextmanager
def _countable_attention():
    """Route attention through kernels FlopCounterMode has formulas for (see the module docstring)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def count_flops(model: nn.Module, example_inputs: Sequence) -> int:
    """FLOPs (multiply-add = 2) of one call ``model(*example_inputs)``, without gradients.

    The model runs once for real on the inputs' device, in whatever train/eval mode it is in; divide by
    the number of frames in ``example_inputs`` for FLOPs per frame.
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), _countable_attention(), counter:
        model(*example_inputs)
    return int(counter.get_total_flops())
