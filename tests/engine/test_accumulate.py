"""`train.accumulate_across_epochs` (DiffAct's official loop, engine/accumulate.py): the optimiser steps after
every N-th video of the run, the count running across epochs; checked against a hand-run loop, through a run
from the CLI's code path, and across a resume."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from streamseg.config import load_configs, resolve_params
from streamseg.data import collate_videos
from streamseg.engine.accumulate import CrossEpochAccumulation
from streamseg.engine.datamodule import DatasetInfo
from streamseg.engine.module import SegmentationModule
from streamseg.models import MSTCN, SegmentationLoss

from .test_schedules import _Crash, _run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _videos() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for i, t in enumerate((5, 7, 6)):
        labels = torch.randint(0, 3, (t,), generator=g)
        items.append({"name": f"v{i}", "index": i, "features": torch.randn(4, t, generator=g), "labels": labels,
                      "full_labels": labels})
    return items


class _Steps(pl.Callback):
    """Optimiser steps done after each training batch, and the weights at each epoch's end."""

    def __init__(self) -> None:
        self.steps, self.after_batch, self.epoch_weights = 0, [], []

    def on_train_start(self, trainer, module) -> None:
        trainer.optimizers[0].register_step_post_hook(lambda *_: setattr(self, "steps", self.steps + 1))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.after_batch.append(self.steps)

    def on_train_epoch_end(self, trainer, module) -> None:
        self.epoch_weights.append(copy.deepcopy(module.net.state_dict()))


def _by_hand(net: MSTCN, videos: list[dict], epochs: int, every: int, carry: bool) -> MSTCN:
    """The official loop (DiffAct main.py), restated: loss / every, backward, step when the run's count is a
    multiple of `every`; ``carry=False``: gradients zeroed at each epoch's start (a count per epoch)."""
    net = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    loss_fn, count = SegmentationLoss(3), 0
    for _ in range(epochs):
        if not carry:
            opt.zero_grad()
        for v in videos:
            batch = collate_videos([v])
            logits = net(batch["features"], (), batch["mask"][:, None])[0]
            (loss_fn(logits, batch["labels"], batch["mask"])[0] / every).backward()
            count += 1
            if count % every == 0:
                opt.step()
                opt.zero_grad()
    return net


def test_steps_after_videos_4_and_8_across_epochs_with_the_carried_gradients():
    torch.manual_seed(0)
    net = MSTCN(4, 3, num_stages=2, num_layers=2, num_maps=8, dropout=0.0)
    start = copy.deepcopy(net)
    videos = _videos()
    info = DatasetInfo("t", ["a", "b", "c"], [], 4, 15.0, 1)
    module = SegmentationModule(net, info, SegmentationLoss(3), partial(torch.optim.SGD, lr=0.5))
    module.accumulator = CrossEpochAccumulation(4)
    steps = _Steps()
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[steps])
    loader = torch.utils.data.DataLoader(videos, batch_size=1, collate_fn=collate_videos)  # 3 videos per epoch
    trainer.fit(module, train_dataloaders=loader)

    # 9 videos in 3 epochs of 3: a step after the 4th (epoch 1's first) and the 8th (epoch 2's second)
    assert steps.after_batch == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    for k, v in start.state_dict().items():  # epoch 0 moved nothing
        torch.testing.assert_close(steps.epoch_weights[0][k], v, rtol=0, atol=0)
    want = _by_hand(start, videos, 3, 4, carry=True)
    for k, v in want.state_dict().items():
        torch.testing.assert_close(module.net.state_dict()[k], v, rtol=1e-6, atol=1e-7)
    # the videos carried over an epoch's end count: dropping them gives other weights
    dropped = _by_hand(start, videos, 3, 4, carry=False)
    assert any((dropped.state_dict()[k] - v).abs().max() > 1e-4 for k, v in want.state_dict().items())
    assert module.accumulator.batches == 9


def test_diffact_paper_configs_accumulate_4_single_videos_across_epochs():
    for ds in ("gtea", "50salads", "breakfast"):
        t = resolve_params(load_configs(ds, "diffact", "paper"))[0].train
        assert (t.batch_size, t.accumulate, t.accumulate_across_epochs) == (1, 4, True)
    assert not resolve_params(load_configs("synth", "diffact", "quick"))[0].train.accumulate_across_epochs


def test_a_resumed_run_continues_the_unfinished_window(tmp_path: Path, synth_root: Path):
    # 5 training videos, 4 per step, 3 epochs: steps after videos 4, 8, 12 of 15; killed at the start of
    # epoch 2, the checkpoint holds the count (10) and the gradients of videos 9 and 10
    opts = ["train.epochs=3", "train.batch_size=1", "train.accumulate=4", "train.accumulate_across_epochs=true"]
    run, _ = _run(tmp_path / "a", synth_root, *opts)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["accumulation"]["batches"] == 15 and ckpt["accumulation"]["every"] == 4
    assert {int(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()} == {3}  # Adam's steps

    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path / "b", synth_root, *opts, callbacks=(_Crash(2),))
    mid = torch.load(tmp_path / "b" / "synth" / "mstcn_quick" / "version_0" / "checkpoints" / "last.ckpt",
                     weights_only=True)["accumulation"]
    assert mid["batches"] == 10 and mid["grads"] and all(g.abs().sum() > 0 for g in mid["grads"].values())
    resumed, _ = _run(tmp_path / "b", synth_root, *opts)
    got = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for k, v in ckpt["state_dict"].items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)
