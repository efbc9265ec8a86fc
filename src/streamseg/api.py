"""The public Python API: the `streamseg` commands as a few objects, for notebooks and scripts.

    from streamseg.api import Experiment, Run, evaluate_dirs, predict

    exp = Experiment.load("synth", "mstcn", "quick", overrides=["train.epochs=5"])  # -D -M -E -o
    exp.params.train.lr                                  # the resolved, typed parameters
    run = exp.train(root="experiments")                  # streamseg train ... -R experiments
    run.metrics["f1@50"]                                 # metrics.json (percent)
    run.evaluate("last")                                 # streamseg test ... --ckpt last
    pred = run.predict("data/synth/features/coffee_000.npy")  # or a video file: labels + segments
    onnx = run.export_onnx()                             # streamseg export onnx RUN_DIR
    run.explain("data/synth/Videos/vid_000.mp4")         # streamseg explain RUN_DIR VIDEO: CAM mp4
    predict(onnx, "rtsp://cam/stream", on_segment=print)  # any model (run, .ckpt, .onnx), file/URL/device
    Run("experiments/synth/mstcn_quick/version_0")       # a finished run from disk

Each call does what the command of the same name does (same run directory, same files); see README.md,
section "Python API". `evaluate_dirs` (score prediction files against ground truth) is
`streamseg evaluate`. Training here runs in this process (one CPU or GPU); for several devices use the
command line (`streamseg train --devices N`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import evaluate_dirs
from .config import ConfigSet, RunParams, load_configs, resolve_params

__all__ = ["Experiment", "Prediction", "Run", "evaluate_dirs", "predict"]


@dataclass
class Prediction:
    """A model's labelling of one video (or feature file), at the original frame rate.

    labels: int64 (T,) class id per original frame. segments: the segment events in the order they
    closed, as `streamseg infer` prints them (``label``, ``label_id``, ``start``, ``end`` in original
    frames, end exclusive, ``start_s``/``end_s``, ``confidence``, ``emitted_at_frame``, ``latency_s``).
    class_names: K names, index = class id. fps: original frames per second. realtime: the lag report
    of a live source or a ``realtime=True`` run (`streamseg.deploy.infer.LagMeter`), else None.
    ended_early: why a video ended before its end (a decoding error, a cut file: the labels cover the
    frames that decoded), else None. footage: how the video was decoded (``sampling``, ``rotation``,
    ``interlaced``, ``filters``; `streamseg.deploy.infer.footage`), empty for features.
    """

    name: str
    labels: np.ndarray
    segments: list[dict[str, Any]]
    class_names: list[str]
    fps: float
    realtime: dict[str, Any] | None = None
    ended_early: str | None = None
    footage: dict[str, Any] = field(default_factory=dict)

    def label_names(self) -> list[str]:
        """The per-frame labels as class names (T,)."""
        return [self.class_names[i] for i in self.labels.tolist()]


class Run:
    """A run directory ``<root>/<dataset>/<model>_<exp>/version_<n>/`` (finished or not).

    Args:
        path: the run directory (it must hold ``config/params.json``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "config" / "params.json").is_file():
            raise FileNotFoundError(f"{self.path}: not a run directory (no config/params.json)")
        self._streamers: dict[str, Any] = {}  # checkpoint path -> TorchStreamer, loaded once

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def version(self) -> int:
        return int(self.path.name.rsplit("_", 1)[-1])

    @property
    def done(self) -> bool:
        """True once training and testing finished (the ``DONE`` file)."""
        return (self.path / "DONE").is_file()

    @property
    def params(self) -> dict[str, Any]:
        """The resolved parameters as run (``config/params.json``), nested ``{data, model, train}``."""
        return json.loads((self.path / "config" / "params.json").read_text())

    @property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: acc, edit, f1@{10,25,50} (percent), per_class, latency, best_val, ..."""
        path = self.path / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no metrics yet (the run has not finished its test phase)")
        return json.loads(path.read_text())

    @property
    def predictions_dir(self) -> Path:
        """Test-split predictions, one file per video in MS-TCN results format."""
        return self.path / "predictions"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    def checkpoint(self, ckpt: str | Path = "best") -> Path:
        """``best`` (falls back to ``last`` when no validation picked one), ``last``, or a path; a checkpoint
        file, or the DeepSpeed folder of the same name that a ``train.strategy=deepspeed`` run saves."""
        from .engine.checkpoint_io import find_checkpoint

        return find_checkpoint(self.path, ckpt)  # a file, or the folder of a train.strategy=deepspeed run

    def evaluate(self, ckpt: str | Path = "best", accelerator: str = "cpu",
                 overrides: Sequence[str] = ()) -> dict[str, Any]:
        """Score a checkpoint on the test split, like `streamseg test --ckpt CKPT`: rewrites
        ``metrics.json``, ``predictions/`` and ``plots/`` and returns the metrics. The config modules
        are the run's snapshot; ``overrides`` change saved params (e.g. ``data.root=/new/place``)."""
        from .engine.rundir import write_json
        from .engine.runner import test_checkpoint

        cfg = self.path / "config"
        configs = load_configs(str(cfg / "dataset.py"), str(cfg / "model.py"), str(cfg / "exp.py"))
        metrics = test_checkpoint(configs, self.path, self.checkpoint(ckpt), accelerator, list(overrides))
        write_json(self.path / "metrics.json", metrics)
        return metrics

    def streamer(self, ckpt: str | Path = "best"):
        """The trained network as a `streamseg.deploy.runtime.TorchStreamer` (CPU, eval mode), loaded
        once per checkpoint: ``state = s.init_state(1)``, then ``logits (1, K, T), state = s.step(x, state)``
        per chunk, ``x = s.meta.preprocess(samples)``. What `predict` runs; ONNX exports share the interface."""
        from .deploy.runtime import TorchStreamer, load_trained_model

        path = self.checkpoint(ckpt)
        key = str(path.resolve())
        if key not in self._streamers:
            net, meta = load_trained_model(path)
            self._streamers[key] = TorchStreamer(net, meta)
        return self._streamers[key]

    def predict(self, source: str | Path, chunk: int | None = None, ckpt: str | Path = "best",
                on_segment: Callable[[dict[str, Any]], None] | None = None, *, realtime: bool = False,
                annotate: str | Path | None = None, sampling: str = "index", deinterlace: str = "auto") -> Prediction:
        """Label a video file, stream URL or device (a model trained on frames) or a ``(D, T)`` features
        ``.npy`` (a model trained on features), online: ``chunk`` sampled frames at a time (default: the
        training chunk size, else 32) with the model's state carried from chunk to chunk, as
        `streamseg infer` does. ``on_segment(event)`` is called as each segment closes. Whole-video models
        (MS-TCN: no look-ahead bound) see the whole input in one call at its end. ``realtime``: play the
        video at its frame rate and report the lag; ``annotate``: write an annotated copy of the video
        (label and timeline bar) there. ``sampling``: ``"index"`` (every ``sample_rate``-th decoded frame)
        or ``"time"`` (a constant grid at the training fps first: variable-frame-rate footage);
        ``deinterlace``: ``"auto"`` (interlaced video only), ``"on"``, ``"off"``; as `streamseg infer
        --sampling/--deinterlace`. See `predict`, which takes any model."""
        return _predict(self.streamer(ckpt), source, chunk, on_segment, realtime, annotate, str(self.path),
                        sampling, deinterlace)

    def export_onnx(self, out: str | Path | None = None, ckpt: str | Path = "best", check: bool = True) -> Path:
        """`streamseg export onnx`: the checkpoint's streaming step as ONNX with the state as explicit
        inputs/outputs (default ``<run>/export/model.onnx``, metadata ``model.json`` beside it), checked
        against PyTorch over a multi-chunk stream unless ``check=False``. Needs the ``export`` extra."""
        from .deploy.onnx_export import export_trained

        path = self.checkpoint(ckpt)
        onnx_path, _, _, _ = export_trained(path, out or self.path / "export" / "model.onnx", check=check)
        return onnx_path

    def explain(self, video: str | Path, out: str | Path | None = None, ckpt: str = "best",
                **options: Any) -> Path:
        """`streamseg explain RUN_DIR VIDEO`: class activation maps beside the frames, as an mp4 (default
        ``<run>/explain/<video>_cam.mp4``); ``options``: ``chunk``, ``target`` (a class name), ``layer``,
        ``method`` ("gradcam" | "hirescam"), ``width``, ``max_frames`` (`deploy.explain.write_explanation`).
        Needs Captum (``streamseg[explain]``)."""
        from .deploy.explain import explain_video

        out = Path(out) if out is not None else self.path / "explain" / f"{Path(video).stem}_cam.mp4"
        explain_video(self.checkpoint(ckpt), video, out, **options)
        return out


def predict(model: Run | str | Path | Any, source: str | Path, chunk: int | None = None,
            on_segment: Callable[[dict[str, Any]], None] | None = None, *, realtime: bool = False,
            annotate: str | Path | None = None, sampling: str = "index", deinterlace: str = "auto") -> Prediction:
    """`streamseg infer SOURCE --model MODEL` as a function: label ``source`` chunk by chunk as it arrives.

    ``model``: a `Run`, a run directory or checkpoint (PyTorch), an exported ``.onnx`` (ONNX Runtime), or
    a streamer (`streamseg.deploy.runtime.TorchStreamer` / ``OnnxStreamer``). ``source``: a video file,
    a stream URL (``rtsp://``, ``http://``, ...), a device (``/dev/video0``, ``FORMAT:TARGET``) or, for
    a model trained on features, a ``(D, T)`` ``.npy``. The rest as `Run.predict`.
    """
    from .deploy.runtime import open_streamer

    if isinstance(model, Run):
        return model.predict(source, chunk, on_segment=on_segment, realtime=realtime, annotate=annotate,
                             sampling=sampling, deinterlace=deinterlace)
    streamer = model if hasattr(model, "step") and hasattr(model, "meta") else open_streamer(model)
    return _predict(streamer, source, chunk, on_segment, realtime, annotate, str(getattr(model, "path", model)),
                    sampling, deinterlace)


def _predict(streamer, source: str | Path, chunk: int | None, on_segment, realtime: bool,
             annotate: str | Path | None, where: str, sampling: str = "index",
             deinterlace: str = "auto") -> Prediction:
    from .deploy.infer import infer_stream, open_source
    from .deploy.sources import is_stream

    meta = streamer.meta
    live = is_stream(source)
    if not live:
        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"{source}: no such file")
    is_features = not live and source.suffix == ".npy"
    if is_features != (meta.input_kind == "features"):
        want = "a (D, T) features .npy file" if meta.input_kind == "features" else "a video file, stream or device"
        raise ValueError(f"{source}: this model ({where}) reads {want}")
    emit = on_segment or (lambda event: None)
    if is_features:
        if realtime or annotate:
            raise ValueError(f"{source}: realtime and annotate need a video, not features")
        labels, events = _predict_features(streamer, source, chunk or meta.chunk_size or 32, emit)
        return Prediction(source.stem, labels, events, list(meta.class_names), meta.fps)
    writer = None
    with open_source(source, streamer, sampling=sampling, deinterlace=deinterlace) as src:
        if annotate is not None:
            from .deploy.annotate import AnnotatedVideoWriter

            writer = AnnotatedVideoWriter(annotate, meta.class_names, src.fps or meta.fps, num_frames=src.num_frames,
                                          bg_classes=meta.bg_classes)
        try:
            result = infer_stream(streamer, src, chunk, emit, realtime=realtime,
                                  on_frames=writer.write if writer is not None else None)
        finally:
            if writer is not None:
                writer.close()
    return Prediction(result.name, result.labels, result.events, list(meta.class_names), result.fps, result.realtime,
                      result.ended_early, result.footage)


def _predict_features(streamer, path: Path, chunk: int, emit: Callable[[dict[str, Any]], None]):
    """Features (D, T) chunk by chunk through ``streamer``; returns (labels (T,) int64, events)."""
    import time

    from .data.streams import upsample_to_full
    from .data.video import FeatureSource
    from .deploy.infer import SegmentTracker

    meta = streamer.meta
    sr = meta.sample_rate
    tracker = SegmentTracker(path.stem, meta.class_names, meta.fps, emit)
    sampled: list[np.ndarray] = []  # labels per sampled frame, chunk by chunk

    def label(samples, state, arrived: float):
        logits, state = streamer.step(meta.preprocess(samples), state)  # logits (1, K, n)
        z = np.exp(logits[0] - logits[0].max(axis=0, keepdims=True))
        probs = z / z.sum(axis=0, keepdims=True)
        labels = probs.argmax(0)
        sampled.append(labels)
        # each sampled frame's label covers the sample_rate original frames from it on
        tracker.push(np.repeat(labels, sr), np.repeat(probs.max(0), sr), arrived)
        return state

    arrived = time.perf_counter()
    with FeatureSource(path, sr, meta.fps) as src:
        num_frames = src.num_frames
        state = streamer.init_state(1)
        if not meta.streaming:  # no look-ahead bound: the whole video in one call
            state = label(src.read(num_frames), state, arrived)
        else:
            while len(samples := src.read(chunk)) > 0:
                arrived = time.perf_counter()
                state = label(samples, state, arrived)
    if not sampled:
        raise ValueError(f"{path}: no frames")
    tracker.finish(num_frames, arrived)
    return upsample_to_full(np.concatenate(sampled), sr, num_frames).astype(np.int64), tracker.events


class Experiment:
    """A dataset + model + experiment config with its resolved parameters: what ``-D -M -E -o`` name.

    Build it with `Experiment.load`. ``params`` is the typed parameter tree (``params.train.lr``, ...);
    changing a field before `train` is the same as an ``-o`` override, but only ``overrides`` given to
    `load` are recorded in the run's ``overrides.json``.
    """

    def __init__(self, configs: ConfigSet, params: RunParams, overrides: dict[str, Any]) -> None:
        self.configs = configs
        self.params = params
        self.overrides = overrides

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, overrides={self.overrides})"

    @classmethod
    def load(cls, dataset: str, model: str, exp: str, overrides: Sequence[str] = (),
             config_root: str | Path | None = None) -> Experiment:
        """Like ``-D dataset -M model -E exp -o KEY=VALUE ... --config-root DIR``: names or ``.py``
        paths; overrides are type-checked and an unknown key raises `ConfigError` listing valid keys."""
        configs = load_configs(dataset, model, exp, config_root)
        params, applied = resolve_params(configs, list(overrides))
        return cls(configs, params, applied)

    @property
    def name(self) -> str:
        """``<dataset>/<model>_<exp>``, the experiment's folder under the experiments root."""
        c = self.configs
        return f"{c.dataset_name}/{c.model_name}_{c.exp_name}"

    def train(self, root: str | Path = "experiments", new: bool = False, accelerator: str = "cpu",
              callbacks: Sequence[Any] = ()) -> Run:
        """`streamseg train`: train (resuming the newest unfinished run with the same params, unless
        ``new``), test the best checkpoint, write ``metrics.json``; returns the `Run`. ``callbacks``:
        extra Lightning callbacks. One process; ``accelerator`` is ``cpu`` or ``gpu``."""
        from .engine.runner import Hardware, train_and_test

        run_dir, _ = train_and_test(self.configs, self.params, self.overrides, root, Hardware(accelerator),
                                    new=new, extra_callbacks=list(callbacks))
        return Run(run_dir.path)

    def runs(self, root: str | Path = "experiments") -> list[Run]:
        """This experiment's runs under ``root``, oldest version first."""
        from .engine.rundir import experiment_dir, versions

        c = self.configs
        exp_dir = experiment_dir(root, c.dataset_name, c.model_name, c.exp_name)
        return [Run(exp_dir / f"version_{v}") for v in versions(exp_dir)]
