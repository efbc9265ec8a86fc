"""Assemble and run training and testing: reads top to bottom, like a reference training script.

    configs + params -> ranks agree on params (`rank_checks`) -> data (prepared, then checked: every
      problem at once, before any training), model, module (`assembly.build`)
      -> run directory (rank 0 decides, all ranks agree)
      -> Trainer(fit, resume from last.ckpt, or last.prev.ckpt when last is damaged)
      -> ranks agree on weights -> test with best.ckpt (`checkpoint_eval.test`) -> metrics.json,
         predictions, plots, DONE

Checkpoints are written atomically with the previous generation kept (`checkpoint_io`); what is
guaranteed under crashes and bad input, and the tests that hold it, is in docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from ..config import ConfigError, ConfigSet, RunParams, to_jsonable
from . import dist
# the parts this script assembles, importable from here as before the split
from .assembly import batch_kind, build, build_net, check_data, load_trained  # noqa: F401
from .batches import BatchKind
from .checkpoint_eval import latency, latency_frames, test, test_checkpoint, test_weights  # noqa: F401
from .checkpoint_io import AtomicCheckpointIO, checkpoint_exists, usable_checkpoint
from .csvlog import ResumableCSVLogger, checkpoint_with_history
from .quiet import RunProgressBar
from .rank_checks import check_ranks_agree, check_ranks_params, sha256
from .strategies import check_strategy, replicated_weights, trainer_strategy
from .rundir import RunDir, claim_run_dir, experiment_dir, write_json, write_snapshot
from .schedules import METRIC_KEYS, early_stopping, early_stopping_summary, needs_validation  # noqa: F401
from .throughput import TrainThroughput


@dataclasses.dataclass
class Hardware:
    accelerator: str = "cpu"  # "cpu" or "gpu"
    devices: int = 1  # processes per node
    num_nodes: int = 1


def _trainer(params: RunParams, run: RunDir, hw: Hardware, dm: Any, callbacks: list) -> pl.Trainer:
    t, has_val = params.train, dm.has_val
    streams = dm.batch_kind is BatchKind.STREAMS
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
        benchmark=True if t.cudnn_benchmark else None,  # None: the session's own setting stays
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
    # wall clocks of the start-up phases, for metrics.json: what comes before the first training step
    clock = {"train_and_test": started}
    # data prepared and checked before a run directory exists: a broken dataset leaves nothing behind
    footage: list[str] = []
    dm, info, module = build(configs, params, launch, footage, clock)
    clock["built"] = time.time()

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
        trainer = _trainer(params, run, hw, dm, callbacks)
        clock["fit"] = time.time()
        trainer.fit(module, datamodule=dm, ckpt_path=run.resume_from, weights_only=True)
        weights = check_ranks_agree(module.net) if replicated_weights(params.train) else [[] for _ in ranks]
        # before testing: trainer.test(ckpt_path=...) restores every callback's state from that checkpoint
        stopped = early_stopping_summary(callbacks, params.train)
        meter = next(cb for cb in callbacks if isinstance(cb, TrainThroughput))
        throughput = meter.summary()
        clock["first_batch"] = meter.first_batch_time
        clock["fit_end"] = time.time()

        best = run.checkpoints / "best.ckpt"
        # a file, or a DeepSpeed run's folder
        ckpt = best if has_val and checkpoint_exists(best) else run.checkpoints / "last.ckpt"
        ckpt = dist.broadcast(usable_checkpoint(ckpt) if trainer.is_global_zero else None)
        metrics = test(trainer, module, dm, run, ckpt)
        metrics["best_val"] = _best_val(callbacks, params)
        metrics["early_stopping"] = stopped
        if trainer.is_global_zero:
            metrics["checkpoint"] = ckpt.name
            metrics["train_seconds"] = round(time.time() - started, 1)
            metrics["world_size"] = trainer.world_size
            metrics["train_throughput"] = throughput
            metrics["startup_clock"] = clock
            write_json(run.metrics, metrics)
            if len(ranks) > 1:  # what each DDP rank ran and ended with (equal by the two checks)
                write_json(run.path / "ranks.json",
                           [{**r, "weights_sha256": sha256(w)} for r, w in zip(ranks, weights)])
            run.done.write_text("finished\n")
        dist.barrier()
    finally:
        if lock is not None:
            lock.release()
    return run, metrics


def _best_val(callbacks: list, params: RunParams) -> float | None:
    """The best validation value of `train.monitor` (what model selection and search optimise)."""
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.monitor and cb.best_model_score is not None:
            return float(cb.best_model_score)
    return None


