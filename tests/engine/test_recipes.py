"""Where recipes live and what they read: each in its own module, typed loss settings, explicit hooks."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from streamseg.config import ConfigError, RunParams, TrainParams
from streamseg.config.loader import optional
from streamseg.engine import recipes
from streamseg.engine.batches import BatchKind
from streamseg.engine.datamodule import DatasetInfo
from streamseg.models import ASRF, DiffAct, FeedsBackLabels, MemoryTCN


def _info(kind: BatchKind = BatchKind.VIDEOS) -> DatasetInfo:
    return DatasetInfo("t", ["a", "b", "c"], [], 4, 15.0, 1, batch_kind=kind)


def test_run_snapshots_that_import_a_recipe_from_its_old_place_still_load():
    """`<run>/config/exp.py` of runs trained before the move import `streamseg.engine.recipes.<name>`."""
    from streamseg.engine.recipes.asrf import asrf_module
    from streamseg.engine.recipes.svtas import svtas_rl_module

    assert recipes.asrf_module is asrf_module and recipes.svtas_rl_module is svtas_rl_module
    with pytest.raises(AttributeError, match="no attribute 'mstcn_module'"):
        recipes.mstcn_module  # noqa: B018


@pytest.mark.parametrize("recipe, net", [("asrf", lambda: ASRF(4, 3, num_layers=2, num_maps=4)),
                                         ("diffact", lambda: DiffAct(4, 3, encoder_layers=2, encoder_maps=4,
                                                                     decoder_layers=2, decoder_maps=4,
                                                                     time_emb_dim=8, feature_layers=(1,)))])
def test_a_recipe_refuses_model_params_without_its_typed_loss_settings(recipe, net):
    """The loss settings are a dataclass the model config's Params subclasses, not fields found by name."""
    import importlib

    build = getattr(importlib.import_module(f"streamseg.engine.recipes.{recipe}"), f"{recipe}_module")

    @dataclasses.dataclass
    class Bare:  # has none of the loss fields
        num_layers: int = 2

    params = RunParams(data=SimpleNamespace(), model=Bare(), train=TrainParams())
    with pytest.raises(ConfigError, match=rf"{recipe}_module reads its loss settings from model params subclassing "
                                          rf"\w+LossParams .*Bare does not"):
        build(net(), params, _info())


class _Feedback(MemoryTCN, FeedsBackLabels):
    feedback_delay = 4

    def teacher_force(self, state, labels, mask=None):
        return state


def test_every_recipe_refuses_chunks_longer_than_a_feedback_nets_delay():
    """Declared by the class (models.FeedsBackLabels), checked by the shared builder: the default recipe too."""
    net = _Feedback(4, 3, num_stages=1, num_layers=2, num_maps=4)
    params = RunParams(data=SimpleNamespace(), model=None, train=TrainParams(chunk_size=5))
    with pytest.raises(ConfigError, match=r"train.chunk_size=5 must be between 1 and model.feedback_delay=4"):
        recipes.default_module(net, params, _info())
    params.train.chunk_size = 4
    assert recipes.default_module(net, params, _info()).chunk_size == 4


def test_the_module_reads_the_batch_kind_the_datamodule_declared():
    net = MemoryTCN(4, 3, num_stages=1, num_layers=2, num_maps=4)
    params = RunParams(data=SimpleNamespace(), model=None, train=TrainParams(chunk_size=4))
    videos = recipes.default_module(net, params, _info(BatchKind.VIDEOS))
    streams = recipes.default_module(net, params, _info(BatchKind.STREAMS))
    assert videos.automatic_optimization and not streams.automatic_optimization
    assert (videos.loss_fn.reduction, streams.loss_fn.reduction) == ("mean", "sum")


def test_optional_config_names_are_declared_in_one_place():
    module = SimpleNamespace(TAKES_CLASS_NAMES=True)
    assert optional(module, "model", "TAKES_CLASS_NAMES", False) is True
    assert optional(SimpleNamespace(), "exp", "build_module", "default") == "default"
    with pytest.raises(KeyError, match="not an optional model config name"):
        optional(module, "model", "takes_class_names")
    torch.manual_seed(0)
