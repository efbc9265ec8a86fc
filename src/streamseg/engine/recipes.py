"""Training recipes: `build_module(net, params, info)` functions that experiment configs use.

`default_module` is MS-TCN's recipe (Adam, CE + 0.15 truncated-MSE smoothing), used when an experiment
config defines no `build_module`. Others are imported by name in experiment configs, e.g.
`from streamseg.engine.recipes import asformer_module as build_module`.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from ..config import ConfigError, RunParams
from ..models import ASRF, C2FTCN, ASRFLoss, DiffAct, DiffActLoss, Transeger
from ..models.asrf import boundary_pos_weight, class_weights
from ..models.losses import SegmentationLoss, SVTASStreamLoss
from ..data import TASLayout
from .datamodule import DatasetInfo, TASDatasetParams, split_names
from .module import SegmentationModule
from .schedules import EpochSchedule, build_optimizer, check_train_options, uses_epoch_schedule


def _adam_module(net: nn.Module, params: RunParams, info: DatasetInfo, loss, **extra) -> SegmentationModule:
    """The module every recipe builds: the optimiser of `train.optimizer` (Adam by default, `train.lr`,
    `train.weight_decay`), the chunking and gradient clipping of `train`, ``loss``; ``extra`` (scheduler,
    stream_batches, ...) goes to SegmentationModule. A `train.schedule` or `train.warmup_epochs` replaces
    the recipe's own scheduler (`engine/schedules.py`)."""
    t = params.train
    check_train_options(t)
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


def default_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    streams = is_stream_input(params)
    # streams: sums over chunks, divided by the valid frames of each truncation window
    loss = SegmentationLoss(info.num_classes, reduction="sum" if streams else "mean")
    return _adam_module(net, params, info, loss, stream_batches=streams)


def is_stream_input(params: RunParams) -> bool:
    """The dataset feeds chunk batches of parallel streams (raw video) rather than whole videos."""
    return getattr(params.data, "input", "features") == "video"


def asformer_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """ASFormer's recipe (ChinaYi/ASFormer main.py): Adam with `train.weight_decay`, ReduceLROnPlateau
    (factor 0.5, patience 3) stepped each epoch on the training loss (the epoch mean; the official code
    uses the epoch sum, which has the same minima), the MS-TCN loss on every stage."""
    return _adam_module(
        net, params, info, SegmentationLoss(info.num_classes),
        scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min", factor=0.5, patience=3),
        scheduler_monitor="train/epoch_loss",
    )


def c2ftcn_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """C2F-TCN's recipe (dipika-singhania/C2F-TCN train.py): Adam (`train.lr`, `train.weight_decay`), CE +
    0.15 truncated MSE on the log of the decoder ensemble (the model's output), the smoothing averaged over
    whole windows of `model.window` frames as the official loader's samples (`SegmentationLoss(smooth_window)`)."""
    if not isinstance(net, C2FTCN):
        raise TypeError(f"this experiment trains C2F-TCN (-M c2ftcn), got {type(net).__name__}")
    return _adam_module(net, params, info, SegmentationLoss(info.num_classes, smooth_window=net.window))


# the model params the ASRF recipe reads (model_configs/asrf.py)
ASRF_LOSS_KEYS = ("class_weight", "smoothing", "smooth_weight", "boundary_weight")


def asrf_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """ASRF's recipe (yiskw713/asrf train.py, libs/helper.py): Adam (`train.lr`, `train.weight_decay`; the
    official optimiser builder, libs/optimizer.py, gives Adam no weight decay, so the paper configs set 0) on
    `ASRFLoss` with the loss settings of the model config: per stage CE, with the official median-frequency
    class weights when `model.class_weight`, + `model.smooth_weight` x the `model.smoothing` term ("gstmse":
    the official Gaussian-similarity T-MSE on the input features), averaged over stages, + `model.boundary_weight`
    x the boundary BCE, whose positive weight is the official frames / boundary frames. Class weights and
    pos_weight come from the labels of the training videos (those the datamodule trains on) at the original
    frame rate, as the official computes them, once, at the first training step (`DeferredLoss`: scoring a
    checkpoint, `streamseg test --ckpt none`, reads no training labels); both are logged and kept in the
    module's hparams (`asrf_pos_weight`, `asrf_class_weights`). The model must be ASRF (its boundary branch
    feeds the loss)."""
    if not isinstance(net, ASRF):
        raise TypeError(f"this experiment trains ASRF (-M asrf) with its boundary loss, got {type(net).__name__}")
    m = params.model
    missing = [k for k in ASRF_LOSS_KEYS if not hasattr(m, k)]
    if missing:
        raise ConfigError(f"asrf_module reads model.{', model.'.join(ASRF_LOSS_KEYS)}; the model params "
                          f"{type(m).__name__} lack {', '.join(missing)} (see model_configs/asrf.py)")

    def build_loss() -> ASRFLoss:
        labels = training_labels(params, "ASRF's boundary pos_weight and class weights")
        pos_weight = boundary_pos_weight(labels)
        weights = class_weights(labels, info.num_classes) if m.class_weight else None
        weight_list = None if weights is None else [round(float(w), 6) for w in weights]
        module.save_hyperparameters({"asrf_pos_weight": pos_weight, "asrf_class_weights": weight_list})
        rank_zero_info(f"ASRF loss: boundary BCE pos_weight {pos_weight:.4f} (training frames / boundary frames), "
                       f"class weights {weight_list if weight_list is not None else 'off'}")
        return ASRFLoss(
            net, info.num_classes, smooth_weight=m.smooth_weight, boundary_weight=m.boundary_weight,
            pos_weight=pos_weight, class_weights=weights, smoothing=m.smoothing,
        )

    module = _adam_module(net, params, info, DeferredLoss(build_loss))
    return module


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


def transeger_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """`default_module` for Transeger, after checking that every chunk is at most `model.feedback_delay`
    frames: in a longer chunk the frames whose fed-back label lies in the same chunk get none (and no
    teacher forcing), so training would not match streaming."""
    if not isinstance(net, Transeger):
        raise TypeError(f"this experiment trains Transeger (-M transeger), got {type(net).__name__}")
    chunk = params.train.chunk_size
    if not 0 < chunk <= net.feedback_delay:
        raise ConfigError(f"train.chunk_size={chunk} must be between 1 and model.feedback_delay="
                          f"{net.feedback_delay} (Transeger feeds back the labels of frame t - feedback_delay)")
    return default_module(net, params, info)


def svtas_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """SVTAS's streaming recipe (Thinksky5124/SVTAS ``segmentation_loss.py``): Adam (`train.lr`,
    `train.weight_decay`) on `SVTASStreamLoss`: per chunk CE + 0.15 smoothing, each normalised by the
    video's number of chunks. For video streams (`data.input="video"`, `train.chunk_size`); with
    `train.tbptt_chunks=1` a step per chunk and the state detached every chunk (SETE). Transeger's chunk
    limit is checked as in `transeger_module`."""
    return _svtas(net, params, info, reward="none")


def svtas_rl_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """SVTAS-RL's recipe (arXiv 2309.15683; SVTAS ``rl_dpg_loss.py`` ``RLPGSegmentationLoss``): `svtas_module`'s
    loss times the no-gradient reward 4 ** dice + 1 of the last stage's soft Dice score on the chunk."""
    return _svtas(net, params, info, reward="dice")


def _svtas(net: nn.Module, params: RunParams, info: DatasetInfo, reward: str) -> SegmentationModule:
    if not is_stream_input(params) or params.train.chunk_size <= 0:
        raise ConfigError("the SVTAS recipes train on video streams: set data.input=video and train.chunk_size > 0 "
                          f"(got data.input={getattr(params.data, 'input', 'features')!r}, "
                          f"train.chunk_size={params.train.chunk_size})")
    if isinstance(net, Transeger):
        transeger_module(net, params, info)  # only for its chunk check
    return _adam_module(net, params, info, SVTASStreamLoss(info.num_classes, reward=reward),
                        stream_batches=True, loss_takes_chunks=True)


def diffact_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """DiffAct's recipe (Finspire13/DiffAct main.py): Adam (`train.lr`, `train.weight_decay`) on
    `DiffActLoss` with the loss settings of the model config (`model.loss_*`, `model.soft_label`,
    `model.boundary_smooth` divided by `data.sample_rate`, as the official smooths boundaries at the
    original frame rate), and the official class weights of the training videos when
    `model.class_weighting`: total / ((count_k + 10) * K) from their labels at the original frame rate.
    The model must be DiffAct (its decoder is trained by the loss)."""
    if not isinstance(net, DiffAct):
        raise TypeError(f"this experiment trains DiffAct (-M diffact) with its diffusion loss, got {type(net).__name__}")
    m = params.model
    weights = training_class_weights(params, info.num_classes) if m.class_weighting else None
    smooth = None if m.boundary_smooth is None else m.boundary_smooth / info.sample_rate
    loss = DiffActLoss(
        net, info.num_classes,
        encoder_ce=m.loss_encoder_ce, encoder_smooth=m.loss_encoder_smooth, decoder_ce=m.loss_decoder_ce,
        decoder_smooth=m.loss_decoder_smooth, decoder_boundary=m.loss_decoder_boundary,
        class_weights=weights, soft_label=m.soft_label, boundary_smooth=smooth,
    )
    return _adam_module(net, params, info, loss)


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
