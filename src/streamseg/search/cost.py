"""The cost side of a search: parameters, FLOPs per frame, or algorithmic latency of a built model.

All three are known before training (they depend on the architecture, not the weights), so a trial over
a cost budget is skipped without training it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ..engine.runner import latency_frames as runner_latency_frames
from ..flops import count_flops, count_params

CostKind = Literal["params", "flops", "latency"]
COSTS: tuple[str, ...] = ("params", "flops", "latency")
UNITS = {"params": "parameters", "flops": "FLOPs per frame", "latency": "frames"}

# frames of the example input for FLOPs counting: long enough that per-frame costs dominate fixed ones
# (MS-TCN's costs are linear in T, so any length gives the same per-frame figure)
FLOPS_FRAMES = 128


def flops_per_frame(net: torch.nn.Module, in_channels: int, frames: int = FLOPS_FRAMES) -> float:
    """FLOPs (multiply-add = 2) of one forward pass over a (1, in_channels, frames) feature clip, divided by `frames`."""
    x = torch.zeros(1, in_channels, frames)
    state = net.init_state(1, torch.device("cpu"))
    was_training = net.training
    net.eval()
    try:
        flops = count_flops(net, (x, state, None))
    finally:
        net.train(was_training)
    return float(flops) / frames


def latency_frames(lookahead: int | None, chunk_size: int, sample_rate: int) -> float:
    """Algorithmic latency in original frames (`engine.runner.latency_frames`: the chunk wait; a look-ahead
    is cut at the end of each chunk and adds nothing); an offline model (whole video, or no chunking)
    waits for the whole video, so its latency is infinite."""
    frames = runner_latency_frames(lookahead, chunk_size, sample_rate)
    return math.inf if frames is None else float(frames)


def model_cost(kind: str, net: torch.nn.Module, in_channels: int, chunk_size: int, sample_rate: int) -> float:
    """The `kind` cost of `net` (see the module docstring)."""
    if kind == "params":
        return float(count_params(net))
    if kind == "flops":
        return flops_per_frame(net, in_channels)
    if kind == "latency":
        return latency_frames(getattr(net, "lookahead", None), chunk_size, sample_rate)
    raise ValueError(f"unknown cost {kind!r}: expected one of {COSTS}")
