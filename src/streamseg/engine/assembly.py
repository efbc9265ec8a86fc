"""Building a run's parts from its configs: the DataModule (data prepared and checked), the network and the
LightningModule, for training (`runner`), scoring (`checkpoint_eval`) and reloading a run (`load_trained`).

    configs + params -> DataModule (prepare_data once per node, then the data check: every problem at once)
      -> dm.info (batch kind, classes, channels) -> model config's build_model -> exp config's build_module
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..config import ConfigError, ConfigSet, RunParams
from ..config.loader import optional
from ..models import set_activation_checkpointing
from . import dist
from .accumulate import CrossEpochAccumulation
from .batches import BatchKind
from .checkpoint_io import find_checkpoint, load_usable_checkpoint
from .compiling import compile_net, configure_compile_cache
from .datacheck import DatasetProblems, run_data_problems
from .datamodule import DatasetInfo, TASDatasetParams
from .module import SegmentationModule
from .quiet import silence_lightning_noise
from .recipes import default_module
from .schedules import check_train_options


def build(configs: ConfigSet, params: RunParams, launch: dist.Launch, notes: list[str] | None = None,
          clock: dict[str, float] | None = None) -> tuple[Any, DatasetInfo, SegmentationModule]:
    """DataModule, dataset info and LightningModule for `params`, data prepared once per node and checked.

    Raises `DatasetProblems` (on every rank) listing every problem of a dataset in the standard layout.
    ``notes`` (rank 0) receives the check's notes on the footage read (`check_data`); ``clock``, when
    given, the wall clock (Unix seconds) at which the data was prepared and checked ("data_checked")."""
    silence_lightning_noise()  # before any Trainer exists (train, test, test --ckpt none all build first)
    check_train_options(params.train)  # a bad optimiser, schedule or early-stopping key, before any work
    dm = configs.dataset.build_datamodule(params.data, params.train)
    if launch.local_rank == 0:
        dm.prepare_data()
    dist.barrier()
    check_data(params, launch, dm.batch_kind, notes)
    if clock is not None:
        clock["data_checked"] = time.time()
    info = dm.info
    net = build_net(configs.model, params.model, info)
    builder = optional(configs.exp, "exp", "build_module", default_module)
    module = builder(net, params, info)
    if params.train.activation_checkpointing and not set_activation_checkpointing(module.net):
        raise ConfigError(f"train.activation_checkpointing: {type(module.net).__name__} has no frame encoder that "
                          "supports it (TSM encoders do); set it to false")
    if params.train.compile:  # in place, state_dict keys unchanged; caches and lengths: engine/compiling.py
        configure_compile_cache(params.train.compile_cache)
        compile_net(module, params.train.length_bucket, dm.batch_kind is BatchKind.STREAMS)
    # the policy is the run's, whatever the experiment's build_module passed
    module.nonfinite = params.train.nonfinite
    if params.train.accumulate_across_epochs:
        module.accumulator = CrossEpochAccumulation(params.train.accumulate)
    return dm, info, module


def build_net(model_config: Any, model_params: Any, info: DatasetInfo) -> Any:
    """`model_config.build_model(params, in_channels, num_classes)`; a model config that sets
    ``TAKES_CLASS_NAMES = True`` (Transeger's text branch) also gets the dataset's class names."""
    build_model = model_config.build_model
    if optional(model_config, "model", "TAKES_CLASS_NAMES", False):
        return build_model(model_params, info.in_channels, info.num_classes, class_names=list(info.class_names))
    return build_model(model_params, info.in_channels, info.num_classes)


def batch_kind(configs: ConfigSet, params: RunParams) -> BatchKind:
    """The batch kind the dataset config's DataModule declares, for code that needs it without running
    anything (tools, search costs): building a DataModule reads no data."""
    return configs.dataset.build_datamodule(params.data, params.train).batch_kind


def check_data(params: RunParams, launch: dist.Launch, kind: BatchKind, notes: list[str] | None = None) -> None:
    """`streamseg.engine.datacheck` on rank 0 (datasets in the standard layout; the videos are checked
    for a `BatchKind.STREAMS` DataModule), result shared by all
    ranks so that they all stop together with the same report. Rank 0 prints the check's notes on the
    footage (rotated, interlaced, variable frame rate, trimmed videos) and adds them to ``notes``."""
    if not isinstance(params.data, TASDatasetParams):
        return  # a custom layout: its DataModule is responsible for its own checks
    found: list[str] = []
    problems = run_data_problems(params.data.root, params.data.split, kind is BatchKind.STREAMS,
                                 params.data.features_dir, notes=found) \
        if launch.is_zero else None
    for note in found:
        print(f"note: {note}", file=sys.stderr)
    if notes is not None:
        notes += found
    problems = dist.broadcast(problems)
    if problems:
        raise DatasetProblems(params.data.root, problems)


def load_saved_params(params: RunParams, run_path: Path) -> None:
    """The run's params.json into `params`; fields added to the configs since then keep their defaults."""
    import json
    import warnings

    from ..config import load_jsonable

    defaulted = load_jsonable(params, json.loads((run_path / "config" / "params.json").read_text()))
    if defaulted:
        warnings.warn(f"{run_path}/config/params.json predates fields {defaulted}; using their defaults", stacklevel=2)


def load_trained(run_path: str | Path, ckpt: str | Path = "best", overrides: list[str] = ()):
    """A finished or unfinished run as it ran: (configs, params, datamodule, module with trained weights).

    The config modules are the run's snapshot (`config/*.py`), the params its `params.json` plus
    `overrides`; weights come from `checkpoints/<ckpt>.ckpt` (best falls back to last; a file, or the folder
    of a `train.strategy=deepspeed` run) or a path, loaded
    by `checkpoint_io.load_usable_checkpoint` (CRC-checked, `weights_only=True`, so a checkpoint file cannot
    run code; a damaged one falls back to its previous generation, else `CheckpointError` naming the file).
    """
    from ..config import apply_overrides, load_configs

    run_path = Path(run_path)
    cfg = run_path / "config"
    configs = load_configs(str(cfg / "dataset.py"), str(cfg / "model.py"), str(cfg / "exp.py"))
    params = configs.default_params()
    load_saved_params(params, run_path)
    apply_overrides(params, list(overrides))
    path = find_checkpoint(run_path, ckpt)  # a file, or a DeepSpeed run's folder
    _, state = load_usable_checkpoint(path, hint="")  # before building: a bad file is refused before any work
    dm, _, module = build(configs, params, dist.Launch(0, 0, 1, 0))
    module.load_state_dict(state["state_dict"])
    return configs, params, dm, module.eval()
