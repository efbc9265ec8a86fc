"""The run's progress bar reads Lightning's logged values (a device sync each: `.item()` per tensor) at
most once per `metrics_every_s` within an epoch, and afresh at an epoch's or a validation's end."""

from __future__ import annotations

import torch

from streamseg.engine.quiet import RunProgressBar


class _Trainer:
    """What `ProgressBar.get_metrics` reads of a trainer, counting the reads of the logged values."""

    loggers: list = []

    def __init__(self) -> None:
        self.reads = 0

    @property
    def progress_bar_metrics(self) -> dict:
        self.reads += 1
        return {"train/loss": torch.tensor(float(self.reads))}


def test_logged_values_are_read_once_per_interval_and_afresh_when_asked():
    trainer, bar = _Trainer(), RunProgressBar(metrics_every_s=3600.0)
    shown = [bar.get_metrics(trainer, None)["train/loss"] for _ in range(50)]
    assert trainer.reads == 1 and shown == [1.0] * 50  # one device sync for 50 batches
    bar.fresh_metrics_next()  # what the epoch's and a validation's end do before drawing
    assert bar.get_metrics(trainer, None)["train/loss"] == 2.0 and trainer.reads == 2


def test_an_interval_of_zero_reads_on_every_batch():
    trainer, bar = _Trainer(), RunProgressBar(metrics_every_s=0.0)
    for _ in range(5):
        bar.get_metrics(trainer, None)
    assert trainer.reads == 5
