"""DiffAct's recipe (Finspire13/DiffAct main.py), its loss settings typed: `models.diffact_loss.DiffActLossParams`."""

from __future__ import annotations

from torch import nn

from ...config import RunParams
from ...models import DiffAct, DiffActLoss
from ...models.diffact_loss import DiffActLossParams
from ..datamodule import DatasetInfo
from ..module import SegmentationModule
from .common import loss_params, segmentation_module, training_class_weights


def diffact_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """Adam (`train.lr`, `train.weight_decay`) on `DiffActLoss` with the model params' `DiffActLossParams`
    (`model.loss_*`, `model.soft_label`, `model.boundary_smooth` divided by `data.sample_rate`, as the
    official smooths boundaries at the original frame rate), and the official class weights of the training
    videos when `model.class_weighting`: total / ((count_k + 10) * K) from their labels at the original frame
    rate. The model must be DiffAct (its decoder is trained by the loss)."""
    if not isinstance(net, DiffAct):
        raise TypeError(f"this experiment trains DiffAct (-M diffact) with its diffusion loss, got {type(net).__name__}")
    m = loss_params(params, DiffActLossParams, "diffact_module", "model_configs/diffact.py")
    weights = training_class_weights(params, info.num_classes) if m.class_weighting else None
    smooth = None if m.boundary_smooth is None else m.boundary_smooth / info.sample_rate
    loss = DiffActLoss(
        net, info.num_classes,
        encoder_ce=m.loss_encoder_ce, encoder_smooth=m.loss_encoder_smooth, decoder_ce=m.loss_decoder_ce,
        decoder_smooth=m.loss_decoder_smooth, decoder_boundary=m.loss_decoder_boundary,
        class_weights=weights, soft_label=m.soft_label, boundary_smooth=smooth,
    )
    return segmentation_module(net, params, info, loss)
