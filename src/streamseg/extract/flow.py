"""Optical flow between consecutive sampled frames with torchvision's RAFT (local weights only).

``RaftFlow(frames_a, frames_b)`` takes ``uint8 (N, 3, H, W)`` pairs (H and W multiples of 8, at least
128 x 128 for ``raft_large`` and ``raft_small``, whose correlation pyramid halves 1/8-resolution maps 3 times)
and returns the flow from a to b, ``float32 (N, 2, H, W)`` (x then y displacement, in pixels of
the input), clipped to +-`FLOW_RANGE` and divided by it, as I3D's flow stream is fed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.checkpoint import load_weights
from .encoders import FLOW_RANGE

__all__ = ["FlowSpec", "RaftFlow", "RAFT_MODELS"]

RAFT_MODELS = ("raft_small", "raft_large")
_RAFT_MULTIPLE = 8  # RAFT's feature encoder downsamples 8x
_RAFT_MIN_SIDE = 128  # 1/8 resolution, then 3 poolings of the correlation pyramid


@dataclass(frozen=True)
class FlowSpec:
    """model: ``"raft_small"`` or ``"raft_large"``; weights: local torchvision RAFT state dict (None: random,
    for tests); updates: RAFT's recurrent refinement iterations (torchvision's default 12);
    encoder_weights: the flow stream's clip encoder weights (`encoders.flow_encoder`)."""

    model: str = "raft_large"
    weights: str | None = None
    updates: int = 12
    encoder_weights: str | None = None


class RaftFlow(nn.Module):
    def __init__(self, spec: FlowSpec, size: tuple[int, int]) -> None:
        super().__init__()
        from torchvision.models.optical_flow import raft_large, raft_small

        if spec.model not in RAFT_MODELS:
            raise ValueError(f"extract: flow model must be one of {RAFT_MODELS}, got {spec.model!r}")
        if spec.updates < 1:
            raise ValueError(f"extract: flow updates must be >= 1, got {spec.updates}")
        if any(s % _RAFT_MULTIPLE or s < _RAFT_MIN_SIDE for s in size):
            raise ValueError(f"extract: RAFT needs frames whose sides are multiples of {_RAFT_MULTIPLE} and >= "
                             f"{_RAFT_MIN_SIDE}, got {size[0]}x{size[1]} (set the frame size)")
        self.net = (raft_small if spec.model == "raft_small" else raft_large)(weights=None)
        if spec.weights is not None:
            load_weights(self.net, spec.weights)
        self.updates = spec.updates
        self.eval()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        # RAFT takes images in [-1, 1]
        a = a.float().div(127.5).sub_(1.0)
        b = b.float().div(127.5).sub_(1.0)
        flow = self.net(a, b, num_flow_updates=self.updates)[-1]
        return flow.clamp(-FLOW_RANGE, FLOW_RANGE).div_(FLOW_RANGE)
