"""What training writes to its loggers (`SegmentationModule._log_train`): ``train/loss`` only on the steps
Lightning writes (every ``train.log_every``), with that step's loss; ``train/epoch_loss`` once per epoch,
the batch-size-weighted mean of the epoch's batch losses (offline) or truncation-window losses (streams)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from streamseg.config import load_configs, resolve_params
from streamseg.engine import SegmentationModule, VideoStreamDataModule, dist
from streamseg.engine.rundir import RunDir
from streamseg.models import MemoryTCN, SegmentationLoss

from ..conftest import TINY


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _rows(path: Path, column: str) -> list[dict[str, str]]:
    """The rows of a CSVLogger metrics.csv where ``column`` has a value."""
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r.get(column)]


class _BatchLosses(pl.Callback):
    """Each training batch's loss (automatic optimisation: ``outputs["loss"]``), videos and epoch, in order;
    the i-th batch of the run is the CSV logger's step i."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, float, int]] = []  # (epoch, loss, batch size)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.batches.append((trainer.current_epoch, float(outputs["loss"]), len(batch["names"])))


def test_offline_step_losses_and_the_epoch_mean_reach_the_csv_log(tmp_path, synth_root):
    from streamseg.engine import runner

    # the real engine (runner.build, _callbacks, _trainer) in this process: MS-TCN on the synthetic features,
    # batches of 2 of the 5 training videos: the epoch's last batch is smaller, so the weighting matters
    configs = load_configs("synth", "mstcn", "quick")
    tiny = [TINY[i] for i in range(1, len(TINY), 2)]
    params, _ = resolve_params(configs, [*tiny, f"data.root={synth_root}", "train.epochs=2", "train.log_every=2",
                                         "train.batch_size=2"])
    dm, _, module = runner.build(configs, params, dist.Launch(0, 0, 1, 0))
    run = RunDir(tmp_path / "run", 0, None)
    run.make()
    capture = _BatchLosses()
    callbacks = [cb for cb in runner._callbacks(params, run, dm.has_val) if "ProgressBar" not in type(cb).__name__]
    trainer = runner._trainer(params, run, runner.Hardware(), dm, [*callbacks, capture])
    log, log_calls = module.log, []  # the steps on which the module calls self.log("train/loss")

    def spy(name, *args, **kwargs):
        if name == "train/loss":
            log_calls.append(len(capture.batches))
        return log(name, *args, **kwargs)

    module.log = spy
    trainer.fit(module, datamodule=dm)

    batches = capture.batches
    sizes = {size for _, _, size in batches}
    assert len(batches) >= 6 and len(sizes) == 2, f"want several batches of two sizes, got {batches}"
    metrics = run.logs / "csv" / "metrics.csv"
    # (a) train/loss exactly on the steps Lightning logs (the (i+1)-th batch, i+1 a multiple of 2), each
    # with that batch's loss: not on the others, and no stale value of an earlier step
    logged = {int(r["step"]): float(r["train/loss"]) for r in _rows(metrics, "train/loss")}
    assert sorted(logged) == [i for i in range(len(batches)) if (i + 1) % 2 == 0]
    for step, value in logged.items():
        assert value == pytest.approx(batches[step][1], rel=1e-6), step
    # ... and `self.log` (~2 ms of host time each) is called on those steps and on each epoch's first only
    firsts = {i for i, (epoch, _, _) in enumerate(batches) if i == 0 or batches[i - 1][0] != epoch}
    assert log_calls == sorted(firsts | set(logged))
    # (b) train/epoch_loss once per epoch: the mean over the epoch's videos of their batch's loss
    epochs = [(int(r["epoch"]), float(r["train/epoch_loss"])) for r in _rows(metrics, "train/epoch_loss")]
    assert [e for e, _ in epochs] == [0, 1]
    for epoch, value in epochs:
        mine = [(loss, size) for e, loss, size in batches if e == epoch]
        weighted = sum(loss * size for loss, size in mine) / sum(size for _, size in mine)
        plain = sum(loss for loss, _ in mine) / len(mine)
        assert abs(weighted - plain) > 1e-4  # so the check below tells the weighting from a plain mean
        assert value == pytest.approx(weighted, rel=1e-5), (epoch, mine)


class _TinyStreamNet(nn.Module):
    """Pixels averaged per frame -> causal MemoryTCN (carried state): a streaming contract model at a
    fraction of TSM's cost. (B, 3, T, H, W) -> logits (1, B, K, T)."""

    lookahead = 0

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.tcn = MemoryTCN(3, num_classes, num_stages=1, num_layers=2, num_maps=8)

    def init_state(self, batch_size, device=None):
        return self.tcn.init_state(batch_size, device)

    def forward(self, x, state, mask):
        return self.tcn(x.mean(dim=(3, 4)), state, mask)


class _RecordingLoss(nn.Module):
    """The summed segmentation loss, recording each training chunk's (loss sum, valid frames)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.inner = SegmentationLoss(num_classes, reduction="sum")
        self.calls: list[tuple[float, float]] = []

    def forward(self, logits, labels, mask):
        loss, parts = self.inner(logits, labels, mask)
        self.calls.append((float(loss.detach()), float(parts["frames"])))
        return loss, parts


class _StreamBatches(pl.Callback):
    """Per training batch (chunk of the streams): epoch, slots, and whether it ends the epoch. (Manual
    optimisation returns no loss: `_RecordingLoss` has the chunks' losses.)"""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, bool]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.batches.append((trainer.current_epoch, len(batch["names"]), trainer.is_last_batch))


def test_stream_training_logs_window_losses_and_the_epoch_mean(tmp_path, synth_video_root):
    tbptt, log_every = 3, 2  # windows of 3 chunks against logging every 2 steps: they only sometimes meet
    dm = VideoStreamDataModule(str(synth_video_root), 1, chunk_size=8, frame_size=(16, 16), sample_rate=2,
                               batch_size=2, bg_classes=("background",), augment=False)
    dm.setup()
    info = dm.info
    torch.manual_seed(0)
    loss = _RecordingLoss(info.num_classes)
    module = SegmentationModule(_TinyStreamNet(info.num_classes), info, loss, optimizer=torch.optim.Adam,
                                tbptt_chunks=tbptt)
    capture = _StreamBatches()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=CSVLogger(str(tmp_path), name="", version="csv"),
                         log_every_n_steps=log_every, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[capture])
    trainer.fit(module, datamodule=dm)

    batches = capture.batches
    assert len(loss.calls) == len(batches) >= 8
    # the optimiser windows: every `tbptt` chunks of an epoch, and the epoch's last chunk closes one
    windows: list[tuple[int, int, float, int]] = []  # (epoch, closing step, window loss, slots)
    loss_sum = frames = chunks = 0
    for step, ((epoch, slots, last), (chunk_loss, chunk_frames)) in enumerate(zip(batches, loss.calls)):
        loss_sum, frames, chunks = loss_sum + chunk_loss, frames + chunk_frames, chunks + 1
        if chunks == tbptt or last:
            windows.append((epoch, step, loss_sum / max(frames, 1), slots))
            loss_sum = frames = chunks = 0
    metrics = tmp_path / "csv" / "metrics.csv"
    # (a) on each logged step, train/loss is the latest window's loss of that epoch (Lightning writes the
    # last value logged, and windows need not close on logged steps); none before an epoch's first window
    logged = {int(r["step"]): float(r["train/loss"]) for r in _rows(metrics, "train/loss")}
    want = {}
    for step, (epoch, _, _) in enumerate(batches):
        closed = [value for e, at, value, _ in windows if e == epoch and at <= step]
        if (step + 1) % log_every == 0 and closed:
            want[step] = closed[-1]
    assert len(set(want.values())) == len(windows)  # windows of 3, logging every 2: each window is written
    assert sorted(logged) == sorted(want)
    for step, value in logged.items():
        assert value == pytest.approx(want[step], rel=1e-5), step
    # (c) train/epoch_loss once per epoch: the slot-weighted mean of that epoch's window losses
    epochs = [(int(r["epoch"]), float(r["train/epoch_loss"])) for r in _rows(metrics, "train/epoch_loss")]
    assert [e for e, _ in epochs] == [0, 1]
    for epoch, value in epochs:
        mine = [(w, slots) for e, _, w, slots in windows if e == epoch]
        chunks = [c for (e, _, _), c in zip(batches, loss.calls) if e == epoch]
        per_frame = sum(c[0] for c in chunks) / sum(c[1] for c in chunks)
        assert len(mine) >= 2 and abs(sum(w for w, _ in mine) / len(mine) - per_frame) > 1e-4  # tells them apart
        assert value == pytest.approx(sum(w * s for w, s in mine) / sum(s for _, s in mine), rel=1e-5), mine
