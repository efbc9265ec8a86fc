"""What Lightning and torch print that is not the user's business, silenced in one place.

Each filter names the exact message and why it is noise here (not a blanket `ignore`):
* Lightning's "Tip: ... litlogger" advert, printed at every Trainer construction.
* torch's "`isinstance(treespec, LeafSpec)` is deprecated" raised from inside Lightning's own pytree
  helper (Lightning's code, not ours; fixed upstream by Lightning, nothing a user can change).
* "The number of training batches (N) is smaller than the logging interval": the module logs each
  epoch's mean loss (`train/epoch_loss`) whatever the interval, so short epochs lose nothing.
* "It is recommended to use `self.log(..., sync_dist=True)`" under DDP: the epoch-level values logged
  with `sync_dist=False` (validation scores, skipped-step count) are computed from gathered data and are
  identical on every rank by construction (`engine/module.py` says so at each call), so a reduction
  would only add a collective.
* "Your `IterableDataset` has `__len__` defined ... could be inaccurate": the stream batcher splits its
  slots between the loader's workers itself (`data/streams.StreamBatcher.__iter__`) and its length is the
  number of steps every rank yields, so the count is exact.
* "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided"
  when a finished run's checkpoint is tested (`streamseg test`, `Run.evaluate`): testing needs none of the
  training callbacks' state.
* rich's 'install "ipywidgets" for Jupyter support' (from the progress bar's live display in a notebook):
  without ipywidgets the bar is drawn once per update as text, which is what the example notebooks show.
The progress bar drops Lightning's `v_num` item (the logger's version string, here `_csv`): the run
directory, printed at the end, is the version. It also reads the logged values at most once a second
during an epoch (`RunProgressBar.metrics_every_s`): reading them converts each logged tensor with
`.item()`, which waits for the GPU, and Lightning's rich bar reads them after every batch. On an H100
that wait took 39 % of the training process's samples (py-spy, docs/benchmarks.md "Streaming
training at GPU speed") and kept the host from queuing the next step while the GPU ran this one.
"""

from __future__ import annotations

import logging
import time
import warnings

from pytorch_lightning.callbacks import RichProgressBar

NOISE_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r"The number of training batches \(\d+\) is smaller than the logging interval.*",
    r".*It is recommended to use `self\.log\(.*sync_dist=True\)`.*",
    r'install "ipywidgets" for Jupyter support',
    r"Your `IterableDataset` has `__len__` defined.*",
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided.*",
)


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def silence_lightning_noise() -> None:
    """Install the filters above (idempotent: warnings' filter list and the logger keep one of each)."""
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropLitLoggerTip) for f in log.filters):
            log.addFilter(_DropLitLoggerTip())


class RunProgressBar(RichProgressBar):
    """Lightning's rich bar without the `v_num` item, reading the logged values at most every
    ``metrics_every_s`` seconds within an epoch (each read waits for the device); the epoch's end and a
    validation's end always read them afresh, so the values a bar leaves on screen are the final ones."""

    def __init__(self, *args, metrics_every_s: float = 1.0, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.metrics_every_s = metrics_every_s
        self._items: dict | None = None
        self._items_at = 0.0

    def get_metrics(self, trainer, pl_module):  # noqa: ANN001 (Lightning's signature)
        now = time.monotonic()
        if self._items is not None and now - self._items_at < self.metrics_every_s:
            return dict(self._items)
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        self._items, self._items_at = dict(items), now
        return items

    def fresh_metrics_next(self) -> None:
        """The next `get_metrics` reads the logged values whatever the time since the last read."""
        self._items = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.fresh_metrics_next()
        super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.fresh_metrics_next()
        super().on_validation_end(trainer, pl_module)
