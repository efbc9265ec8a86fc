"""`RunProgressBar` reads the logged values (a host-device synchronisation on a GPU: Lightning calls
``.item()`` on each) at most every ``metrics_every_s`` seconds, and at the end of each epoch."""

from __future__ import annotations

from types import SimpleNamespace

import streamseg.engine.quiet as quiet
from streamseg.engine.quiet import RunProgressBar


class Trainer:
    """What `get_metrics` reads of a trainer: its loggers (none) and the progress-bar values, counted."""

    loggers: list = []
    state = SimpleNamespace(fn="fit")

    def __init__(self) -> None:
        self.reads = 0

    @property
    def progress_bar_metrics(self) -> dict:
        self.reads += 1
        return {"train/loss": float(self.reads), "v_num": "_csv"}


def test_logged_values_are_read_at_most_every_interval_and_at_epoch_ends(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(quiet.time, "monotonic", lambda: clock[0])
    bar, trainer = RunProgressBar(metrics_every_s=2.0), Trainer()
    first = bar.get_metrics(trainer, None)
    for _ in range(50):  # steps within the interval: the values shown are the last ones read
        clock[0] += 0.01
        assert bar.get_metrics(trainer, None) == first == {"train/loss": 1.0}
    assert trainer.reads == 1
    clock[0] += 2.0
    assert bar.get_metrics(trainer, None) == {"train/loss": 2.0} and trainer.reads == 2
    bar.on_train_epoch_end(trainer, None)  # the epoch's last values, however recent the last read
    assert bar.get_metrics(trainer, None) == {"train/loss": 3.0}
    bar.on_validation_end(trainer, None)
    assert bar.get_metrics(trainer, None) == {"train/loss": 4.0} and trainer.reads == 4
