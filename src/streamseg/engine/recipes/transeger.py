"""Transeger's recipe: the default one, for a Transeger net (whose chunk limit every recipe checks:
`common.check_feedback_chunk`)."""

from __future__ import annotations

from torch import nn

from ...config import RunParams
from ...models import Transeger
from ..datamodule import DatasetInfo
from ..module import SegmentationModule
from .common import default_module


def transeger_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """`default_module` for Transeger; every chunk at most `model.feedback_delay` frames (refused otherwise)."""
    if not isinstance(net, Transeger):
        raise TypeError(f"this experiment trains Transeger (-M transeger), got {type(net).__name__}")
    return default_module(net, params, info)
