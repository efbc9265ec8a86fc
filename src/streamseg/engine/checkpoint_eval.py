"""Scoring a checkpoint (or a network's weights as its config builds them) on the test split.

    trainer.test(module, ckpt) -> EvalResult (`evaluation.TestPass`) -> predictions (rank 0), plots (rank 0),
      summary {acc, edit, f1@k, per_class, num_videos, split, protocol, latency}

`test` is the runner's last step; `test_checkpoint` (`streamseg test`) and `test_weights`
(`streamseg test --ckpt none`) run it outside a training run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from ..config import ConfigError, ConfigSet, RunParams, to_jsonable
from ..data.names import child_path
from ..metrics import PROTOCOLS
from . import dist
from .assembly import build, load_saved_params
from .checkpoint_io import AtomicCheckpointIO, usable_checkpoint
from .datamodule import DatasetInfo
from .evaluation import EvalResult, TestPass, write_predictions
from .module import SegmentationModule
from .rundir import RunDir, write_json
from .schedules import METRIC_KEYS


def evaluate(trainer: pl.Trainer, module: SegmentationModule, dm: Any, ckpt: Path | None,
             protocol: str = "mstcn") -> EvalResult:
    """The test split scored with the F1 ``protocol``: `trainer.test` on `ckpt`'s weights (None: the
    module's weights as they are), scored by a `TestPass` attached to ``trainer`` for this pass only."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    scored = TestPass(protocol)
    trainer.callbacks.append(scored)
    try:
        if ckpt is None:
            trainer.test(module, datamodule=dm, verbose=False)
        else:
            trainer.test(module, datamodule=dm, ckpt_path=str(ckpt), weights_only=True, verbose=False)
    finally:
        trainer.callbacks.remove(scored)
    return scored.result or EvalResult(protocol=protocol)


def test(trainer: pl.Trainer, module: SegmentationModule, dm: Any, run: RunDir, ckpt: Path | None,
         protocol: str = "mstcn") -> dict[str, Any]:
    """Score `ckpt` on the test split; predictions into `run.predictions`, plots into `run.plots` (rank 0).
    ``ckpt=None`` scores the module's weights as they are (the model config's ``weights``). ``protocol``:
    the F1 protocol (`streamseg.metrics.PROTOCOLS`: "mstcn", or "asformer" whose final segment ends one
    frame early), recorded in the summary."""
    result = evaluate(trainer, module, dm, ckpt, protocol)
    scores = result.scores or {}
    summary = {k: scores[k] for k in METRIC_KEYS if k in scores}
    summary["num_videos"] = scores.get("num_videos", 0)
    summary["per_class"] = scores.get("per_class", {})
    summary["split"] = "test"
    summary["protocol"] = protocol
    summary["latency"] = latency(module, dm.info)
    if trainer.is_global_zero:
        write_predictions(run.predictions, result.videos, module.info.class_names)
        write_plots(run.plots, result, module.info)
    return summary


def latency_frames(lookahead: int | None, chunk_size: int, sample_rate: int) -> int | None:
    """Algorithmic latency in original frames: the most a frame waits for its label when the model runs
    chunk by chunk; None for an offline model (lookahead None, or no chunking: it waits for the whole video).

    A frame waits for the rest of its chunk, at most chunk_size - 1 sampled frames (x sample_rate for
    original frames), and no longer: a call returns the logits of its own frames before the next chunk
    exists, so a model's look-ahead is cut at the end of the call (TSM's bidirectional shift sees zeros
    there, a clip backbone pads its last clip) and never adds to the wait. E.g. video_memtcn chunk16:
    clips of 8 (lookahead 7) inside chunks of 16 at sample rate 2 -> 15 x 2 = 30 frames, not (15 + 7) x 2.
    """
    if lookahead is None or chunk_size <= 0:
        return None
    return (chunk_size - 1) * sample_rate


def latency(module: SegmentationModule, info: DatasetInfo) -> dict[str, Any]:
    """Algorithmic latency (`latency_frames`): original frames between a frame's arrival and its label."""
    lookahead = getattr(module.net, "lookahead", None)
    frames = latency_frames(lookahead, module.chunk_size, info.sample_rate) if module.streaming else None
    if frames is None:
        return {"online": False, "frames": None, "seconds": None}
    return {"online": True, "frames": frames, "seconds": round(frames / info.fps, 3)}


def write_plots(directory: Path, result: EvalResult, info: DatasetInfo) -> None:
    """Segmentation bars for the first test videos, the confusion matrix and per-class scores; a video name
    that is not a plain file name is refused (`DataError`) before anything is written."""
    from ..viz import plots

    videos, scores = result.videos, result.scores or {}
    if not videos:
        return
    paths = [child_path(directory, name, ".png", prefix="seg_") for name, _, _ in videos[:8]]
    directory.mkdir(parents=True, exist_ok=True)
    for path, (name, pred, gt) in zip(paths, videos[:8]):
        plots.plot_segmentation(path, gt, pred, info.class_names, info.bg_ids, title=name, fps=info.fps)
    if "confusion" in scores:
        plots.plot_confusion_matrix(directory / "confusion.png", np.asarray(scores["confusion"]), info.class_names)
    if scores.get("per_class"):
        plots.plot_per_class(directory / "per_class.png", scores["per_class"])


def test_checkpoint(
    configs: ConfigSet,
    run_path: Path,
    ckpt: Path,
    accelerator: str,
    overrides: list[str] = (),
    extra_callbacks: list[pl.Callback] = (),
    protocol: str = "mstcn",
) -> dict[str, Any]:
    """`streamseg test`: the run's saved params (plus `overrides`), weights from `ckpt`, test split, scored
    with ``protocol`` (see `test`)."""
    from ..config import apply_overrides

    params = configs.default_params()
    load_saved_params(params, run_path)
    apply_overrides(params, list(overrides))
    run = RunDir(run_path, int(run_path.name.split("_")[-1]), None)
    ckpt = usable_checkpoint(ckpt, hint="")  # checked as resume checks it: a damaged file falls back to *.prev.ckpt
    dm, _, module = build(configs, params, dist.detect_launch())  # weights: trainer.test(ckpt_path)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_model_summary=False,
                         default_root_dir=str(run.path), enable_checkpointing=False,
                         callbacks=list(extra_callbacks), plugins=[AtomicCheckpointIO()])  # its checked load
    module_metrics = test(trainer, module, dm, run, ckpt, protocol)
    module_metrics["checkpoint"] = str(ckpt)
    return module_metrics


def test_weights(
    configs: ConfigSet,
    params: RunParams,
    out: Path,
    accelerator: str,
    extra_callbacks: list[pl.Callback] = (),
    protocol: str = "mstcn",
) -> dict[str, Any]:
    """`streamseg test --ckpt none`: the network exactly as its model config builds it, typically from a
    state dict given by ``model.weights`` (e.g. a checkpoint of the official MS-TCN / MS-TCN++ / ASFormer
    code, read with ``weights_only=True``), scored on the test split without any training run. Predictions
    (MS-TCN results format), plots and ``metrics.json`` go to ``out``."""
    weights = getattr(params.model, "weights", None)
    if not weights:
        raise ConfigError("streamseg test --ckpt none scores the weights the model config loads: give them with "
                          "-o model.weights=PATH (a state dict, e.g. an official MS-TCN/ASFormer checkpoint)")
    if not Path(weights).is_file():
        raise ConfigError(f"model.weights: {weights} does not exist (expected a state dict file)")
    out.mkdir(parents=True, exist_ok=True)
    run = RunDir(out, 0, None)
    dm, _, module = build(configs, params, dist.detect_launch())  # loads model.weights (strict) or raises
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_model_summary=False,
                         default_root_dir=str(out), enable_checkpointing=False, callbacks=list(extra_callbacks))
    metrics = test(trainer, module, dm, run, None, protocol)
    metrics["checkpoint"] = None
    metrics["weights"] = str(weights)
    write_json(out / "params.json", to_jsonable(params))
    return metrics
