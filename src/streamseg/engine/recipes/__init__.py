"""Training recipes: `build_module(net, params, info) -> SegmentationModule` functions (`Recipe`).

`default_module` (MS-TCN's recipe) is used when an experiment config defines no `build_module`
(`config.loader.OPTIONAL`). The others live in their own modules, each with the typed loss settings it
reads (a dataclass the model config's `Params` subclasses, so they are `-o model.<field>` keys), and an
experiment config imports the one it uses explicitly, e.g.
`from streamseg.engine.recipes.asrf import asrf_module as build_module`:

* `asformer.asformer_module`, `c2ftcn.c2ftcn_module`, `transeger.transeger_module`;
* `asrf.asrf_module` (`models.asrf.ASRFLossParams`), `diffact.diffact_module`
  (`models.diffact_loss.DiffActLossParams`);
* `svtas.svtas_module`, `svtas.svtas_rl_module` (video streams, any streaming model).

`common` holds what they share (`segmentation_module`, `DeferredLoss`, the training split's labels).
"""

from __future__ import annotations

import importlib

from .common import (
    DeferredLoss,
    Recipe,
    check_feedback_chunk,
    default_module,
    segmentation_module,
    training_class_weights,
    training_labels,
)

__all__ = ["DeferredLoss", "Recipe", "check_feedback_chunk", "default_module", "segmentation_module",
           "training_class_weights", "training_labels"]

# Where each recipe lived before it moved to its own module: run snapshots (`<run>/config/exp.py`) written
# earlier import it from here, and `load_trained` / `streamseg test` must still rebuild those runs.
_MOVED = {"asformer_module": "asformer", "c2ftcn_module": "c2ftcn", "asrf_module": "asrf",
          "diffact_module": "diffact", "transeger_module": "transeger", "svtas_module": "svtas",
          "svtas_rl_module": "svtas"}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(f"{__name__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
