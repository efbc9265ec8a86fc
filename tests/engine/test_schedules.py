"""The training options of `engine/schedules.py`: optimisers, learning-rate schedules with warm-up, early
stopping; each refused with its key's name when invalid, each checked to change what a run does."""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from streamseg.config import ConfigError, TrainParams, load_configs, resolve_params
from streamseg.engine.module import SegmentationModule
from streamseg.engine.schedules import EpochSchedule, check_train_options

from ..conftest import TINY

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()` before")]


def _lrs(t: TrainParams, epochs: int, metrics: list[float | None] | None = None) -> list[float]:
    """The learning rate each epoch trains at, with `t` and a base lr of 1."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = EpochSchedule(opt, t)
    out = []
    for e in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        sched.step(None if metrics is None else metrics[e])
    return out


def test_each_schedule_sets_the_learning_rate_of_each_epoch():
    approx = partial(pytest.approx, abs=1e-9)
    assert _lrs(TrainParams(), 3) == [1.0, 1.0, 1.0]
    assert _lrs(TrainParams(schedule="step", step_size=2, gamma=0.5, warmup_epochs=2), 7) == approx(
        [1 / 3, 2 / 3, 1, 1, 0.5, 0.5, 0.25])
    assert _lrs(TrainParams(schedule="multistep", milestones=(2, 3), gamma=0.1), 5) == approx([1, 1, 0.1, 0.01, 0.01])
    # cosine from 1 to min_lr over restart_epochs=2, then restart; cycles of 2 then 4 with restart_mult=2
    assert _lrs(TrainParams(schedule="cosine_restarts", restart_epochs=2, min_lr=0.2), 5) == approx(
        [1, 0.6, 1, 0.6, 1])
    assert _lrs(TrainParams(schedule="cosine_restarts", restart_epochs=2, restart_mult=2), 7) == approx(
        [1, 0.5, 1, 0.5 + 0.5 * 2 ** -0.5, 0.5, 0.5 - 0.5 * 2 ** -0.5, 1])
    assert _lrs(TrainParams(warmup_epochs=3), 5) == approx([0.25, 0.5, 0.75, 1, 1])
    # plateau (mode max, patience 1): reduced after two validations without a new best; epochs without a
    # validation (None) do not count
    scores = [50.0, 60.0, 55.0, None, 58.0, 59.0, 61.0]
    assert _lrs(TrainParams(schedule="plateau", plateau_patience=1, gamma=0.5), 7, scores) == approx(
        [1, 1, 1, 1, 1, 0.5, 0.5])


def test_schedule_state_round_trips():
    t = TrainParams(schedule="multistep", milestones=(1, 3), gamma=0.5, warmup_epochs=1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = EpochSchedule(opt, t)
    for _ in range(3):
        sched.step()
    state, lr = sched.state_dict(), opt.param_groups[0]["lr"]
    # the order of a resume: a fresh optimiser and schedule, the schedule's state, then the optimiser's
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = EpochSchedule(opt2, t)
    resumed.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == lr == 0.5
    for _ in range(2):
        sched.step()
        resumed.step()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert opt.param_groups[0]["lr"] == 0.25


@pytest.mark.parametrize("overrides, key", [
    (["train.optimizer=rmsprop"], "train.optimizer"),
    (["train.schedule=linear"], "train.schedule"),
    (["train.schedule=multistep", "train.milestones=30,20"], "train.milestones"),
    (["train.schedule=multistep"], "train.milestones"),
    (["train.schedule=step", "train.step_size=0"], "train.step_size"),
    (["train.schedule=step", "train.gamma=1.5"], "train.gamma"),
    (["train.schedule=cosine_restarts", "train.restart_epochs=0"], "train.restart_epochs"),
    (["train.schedule=plateau", "train.plateau_metric=loss"], "train.plateau_metric"),
    (["train.nesterov=true"], "train.nesterov"),
    (["train.optimizer=sgd", "train.momentum=1.5"], "train.momentum"),
    (["train.warmup_epochs=-1"], "train.warmup_epochs"),
    (["train.early_stop_metric=loss"], "train.early_stop_metric"),
    (["train.early_stop_metric=acc", "train.early_stop_min_delta=-1"], "train.early_stop_min_delta"),
    (["train.early_stop_mode=up"], "train.early_stop_mode"),
    (["train.cudnn_benchmark=true", "train.deterministic=true"], "train.cudnn_benchmark"),
])
def test_invalid_options_are_refused_naming_the_key(overrides, key):
    configs = load_configs("synth", "mstcn", "quick")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        params, _ = resolve_params(configs, overrides)
        check_train_options(params.train)


def test_valid_options_pass():
    configs = load_configs("synth", "mstcn", "quick")
    params, _ = resolve_params(configs, ["train.optimizer=sgd", "train.nesterov=true", "train.schedule=multistep",
                                         "train.milestones=2,5", "train.warmup_epochs=1",
                                         "train.early_stop_metric=f1@50", "train.early_stop_mode=max"])
    check_train_options(params.train)
    assert params.train.milestones == (2, 5)


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("sgd", torch.optim.SGD)])
def test_every_recipe_builds_the_chosen_optimizer_and_a_set_schedule_replaces_its_own(name, cls):
    from streamseg.engine import DatasetInfo
    from streamseg.engine.recipes.asformer import asformer_module

    params, _ = resolve_params(load_configs("synth", "mstcn", "quick"),
                               [f"train.optimizer={name}", "train.weight_decay=0.01", "train.nesterov=" +
                                str(name == "sgd")])
    net, info = torch.nn.Conv1d(2, 3, 1), DatasetInfo("t", ["a", "b", "c"], [], 2, 15.0, 1)
    own = asformer_module(net, params, info).configure_optimizers()  # ASFormer's own plateau on the train loss
    assert type(own["optimizer"]) is cls and own["optimizer"].param_groups[0]["weight_decay"] == 0.01
    assert own["lr_scheduler"]["monitor"] == "train/epoch_loss"
    assert own["optimizer"].param_groups[0].get("nesterov", False) is (name == "sgd")
    params.train.schedule = "cosine_restarts"
    module = asformer_module(net, params, info)
    opt = module.configure_optimizers()
    assert type(opt) is cls and isinstance(module.epoch_schedule.inner,
                                           torch.optim.lr_scheduler.CosineAnnealingWarmRestarts)


# ------------------------------------------------------------------------------------ whole tiny runs
def _run(root: Path, data: Path, *overrides: str, callbacks: tuple = ()) -> tuple[Path, dict]:
    """`streamseg train -D synth -M mstcn -E quick` in this process (TINY sizes); (run dir, metrics.json)."""
    from streamseg.engine.runner import Hardware, train_and_test

    configs = load_configs("synth", "mstcn", "quick")
    tiny = [TINY[i] for i in range(1, len(TINY), 2)]
    params, applied = resolve_params(configs, [*tiny, f"data.root={data}", "train.deterministic=true",
                                               *overrides])
    run, metrics = train_and_test(configs, params, applied, root, Hardware(), extra_callbacks=list(callbacks))
    return run.path, metrics


def _epoch_column(run: Path, column: str) -> list[float]:
    with (run / "logs" / "csv" / "metrics.csv").open(newline="") as f:
        return [float(r[column]) for r in csv.DictReader(f) if r.get(column)]


class _Crash(pl.Callback):
    """Dies at the start of `epoch` of a fresh run (after that epoch's previous last.ckpt), like a kill."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.ckpt_path is None and trainer.current_epoch == self.epoch:
            raise RuntimeError("killed")


def test_sgd_with_a_step_schedule_and_warmup_trains_on_the_scheduled_rates_and_resumes(tmp_path, synth_root):
    opts = ["train.epochs=4", "train.optimizer=sgd", "train.momentum=0.9", "train.lr=0.02", "train.schedule=step",
            "train.step_size=1", "train.gamma=0.5", "train.warmup_epochs=1"]
    run, _ = _run(tmp_path / "a", synth_root, *opts)
    want = [0.01, 0.02, 0.01, 0.005]
    assert _epoch_column(run, "train/lr") == pytest.approx(want)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    opt = ckpt["optimizer_states"][0]
    assert opt["param_groups"][0]["lr"] == pytest.approx(0.0025) and opt["param_groups"][0]["momentum"] == 0.9
    assert all("momentum_buffer" in s for s in opt["state"].values()) and opt["state"]  # SGD with momentum ran

    # killed at the start of epoch 2, then re-run: the resumed run trains on the same rates, to the same weights
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path / "b", synth_root, *opts, callbacks=(_Crash(2),))
    resumed, _ = _run(tmp_path / "b", synth_root, *opts)
    assert resumed.name == "version_0"
    assert _epoch_column(resumed, "train/lr") == pytest.approx(want)
    got = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for k, v in ckpt["state_dict"].items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)


def test_early_stopping_stops_at_the_expected_epoch_and_resumes(tmp_path, synth_root):
    # lr 0: the weights and so the validation scores never change; patience 2 stops after epoch 2
    opts = ["train.epochs=6", "train.lr=0", "train.early_stop_metric=acc", "train.early_stop_patience=2"]
    run, metrics = _run(tmp_path / "a", synth_root, *opts)
    es = metrics["early_stopping"]
    assert es["stopped_epoch"] == 2 and es["metric"] == "acc" and "did not improve" in es["reason"]
    assert json.loads((run / "metrics.json").read_text())["early_stopping"] == es
    assert len(_epoch_column(run, "train/epoch_loss")) == 3  # epochs 0, 1, 2 trained

    # killed at the start of epoch 2 (one validation without improvement so far): the resumed run remembers
    # it and stops at epoch 2 too, not at epoch 4 as a fresh count would
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path / "b", synth_root, *opts, callbacks=(_Crash(2),))
    _, resumed = _run(tmp_path / "b", synth_root, *opts)
    assert resumed["early_stopping"]["stopped_epoch"] == 2

    off_run, off = _run(tmp_path / "c", synth_root, "train.epochs=4", "train.lr=0")
    assert off["early_stopping"] is None and len(_epoch_column(off_run, "train/epoch_loss")) == 4


def test_plateau_steps_on_each_validation_of_the_run(tmp_path, synth_root):
    # a learning rate too small to change a prediction: validation acc stays put, so with patience 0 every
    # validation after the first reduces the rate
    run, _ = _run(tmp_path, synth_root, "train.epochs=4", "train.lr=1e-6", "train.schedule=plateau",
                  "train.plateau_metric=acc", "train.plateau_patience=0", "train.gamma=0.5")
    assert _epoch_column(run, "train/lr") == pytest.approx([1e-6, 1e-6, 5e-7, 2.5e-7], rel=1e-6)


def test_early_stopping_and_plateau_need_a_validation_split(tmp_path):
    from streamseg.engine import runner
    from streamseg.engine.rundir import RunDir

    params, _ = resolve_params(load_configs("synth", "mstcn", "quick"),
                               ["train.early_stop_metric=acc", "train.schedule=plateau"])
    with pytest.raises(ConfigError, match="train.schedule=plateau and train.early_stop_metric=acc.*no validation"):
        runner._callbacks(params, RunDir(tmp_path, 0, None), has_val=False)


def test_streams_follow_the_schedule_under_manual_optimisation(tmp_path, synth_video_root):
    """Stream batches (truncated back-propagation, manual optimisation) step the schedule too."""
    from streamseg.engine.stream_datamodule import VideoStreamDataModule
    from streamseg.models.losses import SegmentationLoss

    from .test_train_logging import _TinyStreamNet

    dm = VideoStreamDataModule(str(synth_video_root), 1, chunk_size=8, frame_size=(16, 16), sample_rate=2,
                               batch_size=2, bg_classes=("background",), augment=False)
    dm.setup()
    t = TrainParams(schedule="multistep", milestones=(1, 2, 3), gamma=0.5)
    module = SegmentationModule(_TinyStreamNet(dm.info.num_classes), dm.info,
                                SegmentationLoss(dm.info.num_classes, reduction="sum"),
                                optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
                                epoch_schedule=partial(EpochSchedule, t=t))
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=CSVLogger(str(tmp_path), name="", version="csv"),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    with (tmp_path / "csv" / "metrics.csv").open(newline="") as f:
        lrs = [float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")]
    assert lrs == pytest.approx([0.1, 0.05, 0.025])
    opt = trainer.optimizers[0]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)
    assert all("momentum_buffer" in opt.state[p] for p in module.net.parameters())
