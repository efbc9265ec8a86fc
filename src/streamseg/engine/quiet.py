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
directory, printed at the end, is the version. Lightning turns every value logged with ``prog_bar=True``
into a Python number (`.item()`, a wait for the GPU) after every training step, in its own logger
connector and again for the bar; so the training loss is logged without ``prog_bar``, and the bar reads
it from `trainer.callback_metrics` (tensors, no conversion) at most every
`RunProgressBar.metrics_every_s` seconds.
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


SHOWN_LOSS = "train/loss"  # logged without prog_bar (engine/module.py), shown by the bar


class RunProgressBar(RichProgressBar):
    """Lightning's rich bar without the `v_num` item, reading the logged values at most every
    ``metrics_every_s`` seconds (and at the end of each training and validation epoch).

    Lightning's `progress_bar_metrics` converts every ``prog_bar`` value with ``.item()``: on a GPU a
    host-device synchronisation, which the bar would otherwise make after every training step, so that the
    host could never queue the next step while the GPU still runs this one (docs/benchmarks.md, issue #18).
    The module logs ``train/loss`` without ``prog_bar`` for the same reason (Lightning's logger connector
    would convert it after every step whatever the bar does); the bar adds it from
    `trainer.callback_metrics` when it reads.
    """

    def __init__(self, *args, metrics_every_s: float = 2.0, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.metrics_every_s = metrics_every_s
        self._items: dict | None = None
        self._read_at = -float("inf")

    def get_metrics(self, trainer, pl_module):  # noqa: ANN001 (Lightning's signature)
        now = time.monotonic()
        if self._items is not None and now - self._read_at < self.metrics_every_s:
            return self._items
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        loss = getattr(trainer, "callback_metrics", {}).get(SHOWN_LOSS)
        if loss is not None and SHOWN_LOSS not in items:
            items[SHOWN_LOSS] = float(loss)
        self._items, self._read_at = items, now
        return items

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._read_at = -float("inf")  # the epoch's last values
        super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._read_at = -float("inf")
        super().on_validation_end(trainer, pl_module)
