"""Assemble and run training and testing: reads top to bottom, like a reference training script.

    configs + params -> run directory (rank 0 decides, all ranks agree) -> data (prepared, then checked:
      every problem at once, before any training) -> model -> module
      -> Trainer(fit, resume from last.ckpt, or last.prev.ckpt when last is damaged)
      -> test with best.ckpt -> metrics.json, predictions, DONE

Checkpoints are written atomically with the previous generation kept (`checkpoint_io`); what is
guaranteed under crashes and bad input, and the tests that hold it, is in docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from ..config import ConfigError, ConfigSet, RunParams, to_jsonable
from ..models import set_activation_checkpointing
from . import dist
from .compiling import compile_net, configure_compile_cache
from .accumulate import CrossEpochAccumulation
from .checkpoint_io import AtomicCheckpointIO, load_usable_checkpoint, usable_checkpoint
from .csvlog import ResumableCSVLogger, checkpoint_with_history
from .datacheck import DatasetProblems, run_data_problems
from .datamodule import DatasetInfo, TASDatasetParams
from .module import SegmentationModule
from .recipes import default_module, is_stream_input
from .quiet import RunProgressBar, silence_lightning_noise
from .strategies import check_strategy, replicated_weights, trainer_strategy
from .schedules import METRIC_KEYS, check_train_options, early_stopping, early_stopping_summary, needs_validation
from .rundir import RunDir, claim_run_dir, experiment_dir, write_json, write_snapshot
from .throughput import TrainThroughput
from ..metrics import PROTOCOLS



@dataclasses.dataclass
class Hardware:
    accelerator: str = "cpu"  # "cpu" or "gpu"
    devices: int = 1  # processes per node
    num_nodes: int = 1


def build(configs: ConfigSet, params: RunParams, launch: dist.Launch,
          notes: list[str] | None = None) -> tuple[Any, DatasetInfo, SegmentationModule]:
    """DataModule, dataset info and LightningModule for `params`, data prepared once per node and checked.

    Raises `DatasetProblems` (on every rank) listing every problem of a dataset in the standard layout.
    ``notes`` (rank 0) receives the check's notes on the footage read (`check_data`)."""
    silence_lightning_noise()  # before any Trainer exists (train, test, test --ckpt none all build first)
    check_train_options(params.train)  # a bad optimiser, schedule or early-stopping key, before any work
    dm = configs.dataset.build_datamodule(params.data, params.train)
    if launch.local_rank == 0:
        dm.prepare_data()
    dist.barrier()
    check_data(params, launch, notes)
    info = dm.info
    net = build_net(configs.model, params.model, info)
    builder = getattr(configs.exp, "build_module", default_module)
    module = builder(net, params, info)
    if params.train.activation_checkpointing and not set_activation_checkpointing(module.net):
        raise ConfigError(f"train.activation_checkpointing: {type(module.net).__name__} has no frame encoder that "
                          "supports it (TSM encoders do); set it to false")
    if params.train.compile:  # in place, state_dict keys unchanged; caches and lengths: engine/compiling.py
        configure_compile_cache(params.train.compile_cache)
        compile_net(module, params.train.length_bucket, module.stream_batches)
    # the policy is the run's, whatever the experiment's build_module passed
    module.nonfinite = params.train.nonfinite
    if params.train.accumulate_across_epochs:
        module.accumulator = CrossEpochAccumulation(params.train.accumulate)
    return dm, info, module


def build_net(model_config: Any, model_params: Any, info: DatasetInfo) -> Any:
    """`model_config.build_model(params, in_channels, num_classes)`; a `build_model` that declares a
    `class_names` parameter (Transeger's text branch) also gets the dataset's class names."""
    build_model = model_config.build_model
    if "class_names" in inspect.signature(build_model).parameters:
        return build_model(model_params, info.in_channels, info.num_classes, class_names=list(info.class_names))
    return build_model(model_params, info.in_channels, info.num_classes)


def check_data(params: RunParams, launch: dist.Launch, notes: list[str] | None = None) -> None:
    """`streamseg.engine.datacheck` on rank 0 (datasets in the standard layout), result shared by all
    ranks so that they all stop together with the same report. Rank 0 prints the check's notes on the
    footage (rotated, interlaced, variable frame rate, trimmed videos) and adds them to ``notes``."""
    if not isinstance(params.data, TASDatasetParams):
        return  # a custom layout: its DataModule is responsible for its own checks
    found: list[str] = []
    problems = run_data_problems(params.data.root, params.data.split, is_stream_input(params),
                                 params.data.features_dir, notes=found) \
        if launch.is_zero else None
    for note in found:
        print(f"note: {note}", file=sys.stderr)
    if notes is not None:
        notes += found
    problems = dist.broadcast(problems)
    if problems:
        raise DatasetProblems(params.data.root, problems)


def _trainer(params: RunParams, run: RunDir, hw: Hardware, has_val: bool, callbacks: list) -> pl.Trainer:
    t = params.train
    streams = is_stream_input(params)
    if streams and (t.accumulate != 1 or t.accumulate_across_epochs):
        raise ConfigError("train.accumulate must be 1 (and train.accumulate_across_epochs false) with video streams: "
                          "use train.tbptt_chunks (chunks per step)")
    world = hw.devices * hw.num_nodes
    return pl.Trainer(
        max_epochs=t.epochs,
        accelerator=hw.accelerator,
        devices=hw.devices,
        num_nodes=hw.num_nodes,
        strategy=trainer_strategy(t, world),
        precision=t.precision,
        # with stream batches the module optimises manually (TBPTT) and clips gradients itself
        gradient_clip_val=None if streams else (t.grad_clip or None),
        # accumulate_across_epochs: the module accumulates (CrossEpochAccumulation, set by `build`)
        accumulate_grad_batches=1 if streams or t.accumulate_across_epochs else t.accumulate,
        check_val_every_n_epoch=t.val_every,
        limit_val_batches=None if has_val else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every,
        deterministic=t.deterministic,
        default_root_dir=str(run.path),
        logger=[
            TensorBoardLogger(str(run.logs), name="", version="tensorboard"),
            # keeps the rows up to the checkpoint resumed from (Lightning's CSVLogger deletes them)
            ResumableCSVLogger(str(run.logs), name="", version="csv", resume_from=run.resume_from),
        ],
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
    )


def _callbacks(params: RunParams, run: RunDir, has_val: bool) -> list:
    """best.ckpt's callback comes before last.ckpt's: both save at the end of a training epoch, in list order,
    and each checkpoint holds every callback's state as it is then. last.ckpt must hold the best-so-far
    of its own epoch; saved first, it would hold the previous epoch's, and a resumed run would pick
    another best.ckpt (tests/engine/test_reliability.py::test_killed_at_every_point_...)."""
    callbacks: list = [TrainThroughput()]
    if not has_val and needs_validation(params.train):
        raise ConfigError(f"{' and '.join(needs_validation(params.train))} read a validation metric, and this "
                          "run has no validation split (set data.val_fraction, or train.select_on=test)")
    stopper = early_stopping(params.train)
    if stopper is not None:
        callbacks.append(stopper)
    if has_val:
        callbacks.append(
            ModelCheckpoint(
                dirpath=run.checkpoints,
                filename="best",
                monitor=f"val/{params.train.monitor}",
                mode="max",
                save_top_k=1,
                enable_version_counter=False,
            )
        )
    callbacks.append(ModelCheckpoint(
        dirpath=run.checkpoints, filename="last", save_top_k=1, monitor=None, enable_version_counter=False,
        # every training epoch, also when validation does not run (train.val_every > epochs, no val split)
        save_on_train_epoch_end=True,
    ))
    try:
        callbacks.append(RunProgressBar(leave=True))
    except Exception:  # rich missing or unusable terminal: Lightning's default bar
        pass
    return callbacks


def train_and_test(
    configs: ConfigSet,
    params: RunParams,
    overrides: dict[str, Any],
    root: str | Path,
    hw: Hardware,
    new: bool = False,
    extra_callbacks: list[pl.Callback] = (),
) -> tuple[RunDir, dict[str, Any]]:
    """Train (resuming an unfinished run), test the best checkpoint, write metrics. Returns (run, metrics).

    `extra_callbacks` (e.g. Telegram reports) are added to the Trainer's callbacks."""
    check_strategy(params.train, hw.accelerator)  # before any process group, data or run directory
    launch = dist.detect_launch()
    dist.init_process_group(launch, hw.accelerator)
    params_json = to_jsonable(params)
    ranks = check_ranks_params(params_json)
    exp_dir = experiment_dir(root, configs.dataset_name, configs.model_name, configs.exp_name)

    pl.seed_everything(params.train.seed, workers=True, verbose=False)
    started = time.time()
    # data prepared and checked before a run directory exists: a broken dataset leaves nothing behind
    footage: list[str] = []
    dm, info, module = build(configs, params, launch, footage)

    # rank 0 locks the version it runs until the end (the kernel releases it if the process dies)
    run, lock = claim_run_dir(exp_dir, params_json, new=new) if launch.is_zero else (None, None)
    try:
        if launch.is_zero:
            if run.resume_from is not None:  # a damaged last.ckpt falls back to last.prev.ckpt, with a warning
                run.resume_from = usable_checkpoint(run.resume_from)
                # ... and so does one written just before a kill that took its epoch's row of metrics.csv
                run.resume_from = checkpoint_with_history(run.resume_from, run.logs / "csv" / "metrics.csv")
            write_snapshot(run, configs.paths(), params_json, overrides)
            if footage:  # how the videos were decoded (rotated upright, deinterlaced, ...), with the run
                (run.config / "footage.txt").write_text("".join(f"{note}\n" for note in footage), encoding="utf-8")
        run = dist.broadcast(run)
        has_val = dm.has_val
        callbacks = _callbacks(params, run, has_val) + list(extra_callbacks)
        trainer = _trainer(params, run, hw, has_val, callbacks)
        trainer.fit(module, datamodule=dm, ckpt_path=run.resume_from, weights_only=True)
        weights = check_ranks_agree(module) if replicated_weights(params.train) else [[] for _ in ranks]
        # before testing: trainer.test(ckpt_path=...) restores every callback's state from that checkpoint
        stopped = early_stopping_summary(callbacks, params.train)
        throughput = next((cb.summary() for cb in callbacks if isinstance(cb, TrainThroughput)), {})

        best = run.checkpoints / "best.ckpt"
        ckpt = best if has_val and best.is_file() else run.checkpoints / "last.ckpt"
        ckpt = dist.broadcast(usable_checkpoint(ckpt) if trainer.is_global_zero else None)
        metrics = test(trainer, module, dm, run, ckpt)
        metrics["best_val"] = _best_val(callbacks, params)
        metrics["early_stopping"] = stopped
        if trainer.is_global_zero:
            metrics["checkpoint"] = ckpt.name
            metrics["train_seconds"] = round(time.time() - started, 1)
            metrics["world_size"] = trainer.world_size
            metrics["train_throughput"] = throughput
            write_json(run.metrics, metrics)
            if len(ranks) > 1:  # what each DDP rank ran and ended with (equal by the two checks)
                write_json(run.path / "ranks.json",
                           [{**r, "weights_sha256": _sha256(w)} for r, w in zip(ranks, weights)])
            run.done.write_text("finished\n")
        dist.barrier()
    finally:
        if lock is not None:
            lock.release()
    return run, metrics


def _load_saved_params(params: RunParams, run_path: Path) -> None:
    """The run's params.json into `params`; fields added to the configs since then keep their defaults."""
    import json
    import warnings

    from ..config import load_jsonable

    defaulted = load_jsonable(params, json.loads((run_path / "config" / "params.json").read_text()))
    if defaulted:
        warnings.warn(f"{run_path}/config/params.json predates fields {defaulted}; using their defaults", stacklevel=2)


def _best_val(callbacks: list, params: RunParams) -> float | None:
    """The best validation value of `train.monitor` (what model selection and search optimise)."""
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.monitor and cb.best_model_score is not None:
            return float(cb.best_model_score)
    return None


def load_trained(run_path: str | Path, ckpt: str | Path = "best", overrides: list[str] = ()):
    """A finished or unfinished run as it ran: (configs, params, datamodule, module with trained weights).

    The config modules are the run's snapshot (`config/*.py`), the params its `params.json` plus
    `overrides`; weights come from `checkpoints/<ckpt>.ckpt` (best falls back to last) or a path, loaded
    by `checkpoint_io.load_usable_checkpoint` (CRC-checked, `weights_only=True`, so a checkpoint file cannot
    run code; a damaged one falls back to its previous generation, else `CheckpointError` naming the file).
    """
    from ..config import apply_overrides, load_configs

    run_path = Path(run_path)
    cfg = run_path / "config"
    configs = load_configs(str(cfg / "dataset.py"), str(cfg / "model.py"), str(cfg / "exp.py"))
    params = configs.default_params()
    _load_saved_params(params, run_path)
    apply_overrides(params, list(overrides))
    if str(ckpt) in ("best", "last"):
        path = run_path / "checkpoints" / f"{ckpt}.ckpt"
        if not path.is_file():
            path = run_path / "checkpoints" / "last.ckpt"
    else:
        path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    _, state = load_usable_checkpoint(path, hint="")  # before building: a bad file is refused before any work
    dm, _, module = build(configs, params, dist.Launch(0, 0, 1, 0))
    module.load_state_dict(state["state_dict"])
    return configs, params, dm, module.eval()


def _sha256(obj: Any) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def check_ranks_params(params_json: dict[str, Any]) -> list[dict[str, Any]]:
    """Every DDP rank must resolve the same params (they run the same command line and configs; a config
    that reads its host, the clock or an unseeded random number would break this). Returns each rank's
    `{rank, host, pid, params_sha256}`; raises ConfigError on every rank, naming the keys that differ."""
    import os
    import platform

    mine = {"rank": dist.detect_launch().rank, "host": platform.node(), "pid": os.getpid(),
            "params_sha256": _sha256(params_json)}
    gathered = dist.all_gather((mine, params_json))
    for rank, (info, other) in enumerate(gathered):
        if info["params_sha256"] != gathered[0][0]["params_sha256"]:
            from .rundir import _diff

            raise ConfigError(f"DDP rank {rank} resolved other params than rank 0 ({_diff(gathered[0][1], other)}); "
                              "every rank must run the same command with the same config files")
    return [info for info, _ in gathered]


def check_ranks_agree(module: SegmentationModule) -> list[list[float]]:
    """After DDP training every rank must hold the same weights; a mismatch means a broken setup
    (e.g. ranks that saw different data counts), so fail loudly instead of saving rank 0's silently.
    Returns every rank's per-tensor weight sums."""

    summary = [float(p.detach().double().sum()) for p in module.net.parameters()]
    gathered = dist.all_gather(summary)
    if any(g != gathered[0] for g in gathered):
        raise RuntimeError(f"DDP ranks ended training with different weights: {[g[:3] for g in gathered]}")
    return gathered


def test(trainer: pl.Trainer, module: SegmentationModule, dm: Any, run: RunDir, ckpt: Path | None,
         protocol: str = "mstcn") -> dict[str, Any]:
    """Score `ckpt` on the test split; predictions into `run.predictions`, plots into `run.plots`.
    ``ckpt=None`` scores the module's weights as they are (the model config's ``weights``). ``protocol``:
    the F1 protocol (`streamseg.metrics.PROTOCOLS`: "mstcn", or "asformer" whose final segment ends one
    frame early), recorded in the summary."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    module.predictions_dir = run.predictions
    module.test_protocol = protocol
    if ckpt is None:
        trainer.test(module, datamodule=dm, verbose=False)
    else:
        trainer.test(module, datamodule=dm, ckpt_path=str(ckpt), weights_only=True, verbose=False)
    results = dict(module.test_results or {})
    summary = {k: results[k] for k in METRIC_KEYS if k in results}
    summary["num_videos"] = results.get("num_videos", 0)
    summary["per_class"] = results.get("per_class", {})
    summary["split"] = "test"
    summary["protocol"] = protocol
    summary["latency"] = latency(module, dm.info)
    if trainer.is_global_zero:
        _plots(module, run)
    return summary


def latency_frames(lookahead: int | None, chunk_size: int, sample_rate: int) -> int | None:
    """Algorithmic latency in original frames: the most a frame waits for its label when the model runs
    chunk by chunk; None for an offline model (lookahead None, or no chunking: it waits for the whole video).

    A frame waits for the rest of its chunk, at most chunk_size - 1 sampled frames (x sample_rate for
    original frames), and no longer: a call returns the logits of its own frames before the next chunk
    exists, so a model's look-ahead is cut at the end of the call (TSM's bidirectional shift sees zeros
    there, a clip backbone pads its last clip) and never adds to the wait. E.g. video_memtcn chunk16:
    clips of 8 (lookahead 7) inside chunks of 16 at sample rate 2 -> 15 x 2 = 30 frames, not (15 + 7) x 2.
    """
    if lookahead is None or chunk_size <= 0:
        return None
    return (chunk_size - 1) * sample_rate


def latency(module: SegmentationModule, info: DatasetInfo) -> dict[str, Any]:
    """Algorithmic latency (`latency_frames`): original frames between a frame's arrival and its label."""
    lookahead = getattr(module.net, "lookahead", None)
    frames = latency_frames(lookahead, module.chunk_size, info.sample_rate) if module.streaming else None
    if frames is None:
        return {"online": False, "frames": None, "seconds": None}
    return {"online": True, "frames": frames, "seconds": round(frames / info.fps, 3)}


def _plots(module: SegmentationModule, run: RunDir) -> None:
    """Segmentation bars for the first test videos, the confusion matrix and per-class scores."""
    import numpy as np

    from ..data.names import child_path
    from ..viz import plots

    videos = getattr(module, "_test_videos", [])
    results = module.test_results or {}
    if not videos:
        return
    info = module.info
    paths = [child_path(run.plots, name, ".png", prefix="seg_") for name, _, _ in videos[:8]]  # refused: DataError
    run.plots.mkdir(parents=True, exist_ok=True)
    for path, (name, pred, gt) in zip(paths, videos[:8]):
        plots.plot_segmentation(path, gt, pred, info.class_names, info.bg_ids, title=name, fps=info.fps)
    if "confusion" in results:
        plots.plot_confusion_matrix(run.plots / "confusion.png", np.asarray(results["confusion"]), info.class_names)
    if results.get("per_class"):
        plots.plot_per_class(run.plots / "per_class.png", results["per_class"])


def test_checkpoint(
    configs: ConfigSet,
    run_path: Path,
    ckpt: Path,
    accelerator: str,
    overrides: list[str] = (),
    extra_callbacks: list[pl.Callback] = (),
    protocol: str = "mstcn",
) -> dict[str, Any]:
    """`streamseg test`: the run's saved params (plus `overrides`), weights from `ckpt`, test split, scored
    with ``protocol`` (see `test`)."""
    from ..config import apply_overrides

    params = configs.default_params()
    _load_saved_params(params, run_path)
    apply_overrides(params, list(overrides))
    run = RunDir(run_path, int(run_path.name.split("_")[-1]), None)
    ckpt = usable_checkpoint(ckpt, hint="")  # checked as resume checks it: a damaged file falls back to *.prev.ckpt
    dm, _, module = build(configs, params, dist.detect_launch())  # weights: trainer.test(ckpt_path)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_model_summary=False,
                         default_root_dir=str(run.path), enable_checkpointing=False,
                         callbacks=list(extra_callbacks), plugins=[AtomicCheckpointIO()])  # its checked load
    module_metrics = test(trainer, module, dm, run, ckpt, protocol)
    module_metrics["checkpoint"] = str(ckpt)
    return module_metrics


def test_weights(
    configs: ConfigSet,
    params: RunParams,
    out: Path,
    accelerator: str,
    extra_callbacks: list[pl.Callback] = (),
    protocol: str = "mstcn",
) -> dict[str, Any]:
    """`streamseg test --ckpt none`: the network exactly as its model config builds it, typically from a
    state dict given by ``model.weights`` (e.g. a checkpoint of the official MS-TCN / MS-TCN++ / ASFormer
    code, read with ``weights_only=True``), scored on the test split without any training run. Predictions
    (MS-TCN results format), plots and ``metrics.json`` go to ``out``."""
    weights = getattr(params.model, "weights", None)
    if not weights:
        raise ConfigError("streamseg test --ckpt none scores the weights the model config loads: give them with "
                          "-o model.weights=PATH (a state dict, e.g. an official MS-TCN/ASFormer checkpoint)")
    if not Path(weights).is_file():
        raise ConfigError(f"model.weights: {weights} does not exist (expected a state dict file)")
    out.mkdir(parents=True, exist_ok=True)
    run = RunDir(out, 0, None)
    dm, _, module = build(configs, params, dist.detect_launch())  # loads model.weights (strict) or raises
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_model_summary=False,
                         default_root_dir=str(out), enable_checkpointing=False, callbacks=list(extra_callbacks))
    metrics = test(trainer, module, dm, run, None, protocol)
    metrics["checkpoint"] = None
    metrics["weights"] = str(weights)
    write_json(out / "params.json", to_jsonable(params))
    return metrics
