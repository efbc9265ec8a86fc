"""ASRF's recipe (yiskw713/asrf train.py, libs/helper.py), its loss settings typed: `models.asrf.ASRFLossParams`."""

from __future__ import annotations

from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from ...config import RunParams
from ...models import ASRF, ASRFLoss
from ...models.asrf import ASRFLossParams, boundary_pos_weight, class_weights
from ..datamodule import DatasetInfo
from ..module import SegmentationModule
from .common import DeferredLoss, loss_params, segmentation_module, training_labels


def asrf_module(net: nn.Module, params: RunParams, info: DatasetInfo) -> SegmentationModule:
    """Adam (`train.lr`, `train.weight_decay`; the official optimiser builder, libs/optimizer.py, gives Adam
    no weight decay, so the paper configs set 0) on `ASRFLoss` with the model params' `ASRFLossParams`: per
    stage CE, with the official median-frequency class weights when `model.class_weight`, +
    `model.smooth_weight` x the `model.smoothing` term ("gstmse": the official Gaussian-similarity T-MSE on
    the input features), averaged over stages, + `model.boundary_weight` x the boundary BCE, whose positive
    weight is the official frames / boundary frames. Class weights and pos_weight come from the labels of
    the training videos (those the datamodule trains on) at the original frame rate, as the official
    computes them, once, at the first training step (`DeferredLoss`: scoring a checkpoint, `streamseg test
    --ckpt none`, reads no training labels); both are logged and kept in the module's hparams
    (`asrf_pos_weight`, `asrf_class_weights`). The model must be ASRF (its boundary branch feeds the loss)."""
    if not isinstance(net, ASRF):
        raise TypeError(f"this experiment trains ASRF (-M asrf) with its boundary loss, got {type(net).__name__}")
    m = loss_params(params, ASRFLossParams, "asrf_module", "model_configs/asrf.py")

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

    module = segmentation_module(net, params, info, DeferredLoss(build_loss))
    return module
