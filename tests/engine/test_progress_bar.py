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


def test_training_steps_convert_no_logged_tensor_and_the_bar_still_shows_the_loss(tmp_path, synth_root, monkeypatch):
    """A real fit: Lightning converts ``prog_bar`` values with ``.item()`` (a device sync on a GPU) after every
    step in its logger connector, whatever the bar does; the training loss is logged without ``prog_bar``, so no
    logged tensor is converted during training steps, and the bar shows it from ``callback_metrics``."""
    import torch
    from pytorch_lightning.trainer.connectors.logger_connector import result

    from streamseg.api import Experiment
    from tests.conftest import TINY

    import pytorch_lightning as pl

    converted, real, stepping = [], result.convert_tensors_to_scalars, [False]

    class Steps(pl.Callback):  # from a training batch's start to the epoch's validation or end
        def on_train_batch_start(self, *args):  # noqa: ANN002
            stepping[0] = True

        def on_validation_start(self, *args):  # noqa: ANN002
            stepping[0] = False

        on_train_epoch_end = on_validation_start

    def counting(value):
        if stepping[0] and isinstance(value, torch.Tensor):
            converted.append(value)
        return real(value)

    monkeypatch.setattr(result, "convert_tensors_to_scalars", counting)
    shown = []
    real_get = RunProgressBar.get_metrics

    def spy(self, trainer, module):
        items = real_get(self, trainer, module)
        shown.append(items.get("train/loss"))
        return items

    monkeypatch.setattr(RunProgressBar, "get_metrics", spy)
    overrides = [v for v in TINY if v != "-o"] + [f"data.root={synth_root}", "train.epochs=1"]
    Experiment.load("synth", "mstcn", "quick", overrides).train(root=tmp_path, callbacks=[Steps()])
    assert converted == []
    assert any(isinstance(v, float) for v in shown)
