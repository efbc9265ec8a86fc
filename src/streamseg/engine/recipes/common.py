"""What every recipe shares: the module builder, the default (MS-TCN) recipe, a loss built on first use and
the training split's labels (for losses weighted by class or boundary frequencies)."""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import torch
from torch import nn

from ...config import ConfigError, RunParams
from ...data import TASLayout
from ...models import FeedsBackLabels
from ...models.losses import SegmentationLoss
from ..datamodule import DatasetInfo, TASDatasetParams, split_names
from ..module import SegmentationModule
from ..schedules import EpochSchedule, build_optimizer, check_train_options, uses_epoch_schedule

# An experiment config's `build_module` (config.loader.OPTIONAL), and every recipe here
Recipe = Callable[[nn.Module, RunParams, DatasetInfo], SegmentationModule]


def segmentation_module(net: nn.Module, params: RunParams, info: DatasetInfo, loss, **extra) -> SegmentationModule:
    """The module every recipe builds: the optimiser of `train.optimizer` (Adam by default, `train.lr`,
    `train.weight_decay`), the chunking and gradient clipping of `train`, ``loss``; ``extra`` (scheduler,
    loss_takes_chunks, ...) goes to SegmentationModule. A `train.schedule` or `train.warmup_epochs` replaces
    the recipe's own scheduler (`engine/schedules.py`). A net that feeds its labels back
    (`models.FeedsBackLabels`) is refused chunks longer than its `feedback_delay`."""
    t = params.train
    check_train_options(t)
    if isinstance(net, FeedsBackLabels):
        check_feedback_chunk(net, t.chunk_size)
    if uses_epoch_schedule(t):
        extra.pop("scheduler", None)
        extra.pop("scheduler_monitor", None)
        extra["epoch_schedule"] = partial(EpochSchedule, t=t)
    return SegmentationModule(
        net,
        info,
        loss=loss,
        optimizer=build_optimizer(t),
        chunk_size=t.chunk_size,
        tbptt_chunks=t.tbptt_chunks,
        grad_clip=t.grad_clip,
        **extra,
    )


def check_feedback_chunk(net: FeedsBackLabels, chunk: int) -> None:
    """Every chunk at most `feedback_delay` frames: in a longer chunk the frames whose fed-back label lies in
    the same chunk get none (and no teacher forcing), so training would not match streaming."""
    if not 0 < chunk <= net.feedback_delay:
        raise ConfigError(f"train.chunk_size={chunk} must be between 1 and model.feedback_delay="
                          f"{net.feedback_delay} ({type(net).__name__} feeds back the labels of frame t - "
                          "feedback_delay)")


def default_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """MS-TCN's recipe (Adam, CE + 0.15 truncated-MSE smoothing on every stage), the default."""
    # streams (info.batch_kind): sums over chunks, divided by the valid frames of each truncation window
    loss = SegmentationLoss(info.num_classes, reduction="sum" if info.streams else "mean")
    return segmentation_module(net, params, info, loss)


class DeferredLoss:
    """A loss built by ``build()`` on its first call (a training step) or first `loss` access, so that a
    module that only evaluates never computes what the loss needs (e.g. class weights from training labels)."""

    def __init__(self, build) -> None:
        self._build, self._loss = build, None

    @property
    def loss(self):
        if self._loss is None:
            self._loss = self._build()
        return self._loss

    def __call__(self, logits, labels, mask):
        return self.loss(logits, labels, mask)


def training_labels(params: RunParams, purpose: str) -> list[np.ndarray]:
    """Label arrays (T,) int64 at the original frame rate of the training videos (the same training
    videos the datamodule uses: the train split less any `val_fraction` held out). `purpose` names the
    caller in the error for a dataset outside the standard TAS layout."""
    data = params.data
    if not isinstance(data, TASDatasetParams):
        raise ConfigError(f"{purpose} need a dataset in the standard TAS layout "
                          f"(data params subclassing TASDatasetParams), got {type(data).__name__}")
    layout = TASLayout(data.root)
    names = split_names(layout, data.split, data.val_fraction, params.train.seed, params.train.select_on)["train"]
    return [layout.load_labels(name) for name in names]


def training_class_weights(params: RunParams, num_classes: int) -> torch.Tensor:
    """DiffAct's class weights (K,): total / ((count_k + 10) * K), counts over the training videos' labels
    at the original frame rate (the same training videos the datamodule uses)."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for labels in training_labels(params, "model.class_weighting (DiffAct's class weights)"):
        counts += torch.bincount(torch.from_numpy(labels), minlength=num_classes)[:num_classes]
    return (counts.sum() / ((counts + 10) * num_classes)).float()


def loss_params(params: RunParams, kind: type, recipe: str, model_config: str):
    """``params.model`` as the typed loss settings ``kind`` a recipe reads (a dataclass the model config's
    `Params` subclasses), or a ConfigError naming what is missing."""
    m = params.model
    if not isinstance(m, kind):
        raise ConfigError(f"{recipe} reads its loss settings from model params subclassing {kind.__name__} "
                          f"({kind.__module__}); {type(m).__name__} does not (see {model_config})")
    return m
