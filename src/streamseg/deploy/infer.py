"""Online inference on a video file, network stream or device: chunk by chunk through a `Streamer`,
segment events as they close.

Per source: PyAV decodes every ``sample_rate``-th frame at the model's input size (`StreamSource`, the
same decode and resize as training), `DeployMeta.preprocess` normalises, the streamer labels a chunk as
soon as its frames have arrived, and each sampled frame's label covers the ``sample_rate`` original
frames from it on (as `streamseg.data.streams.upsample_to_full`). A segment closes when a frame gets a
different label; its event is emitted right then. The last segment closes at the end of the source.

Event (one JSON object per line)::

    {"video": str, "label": str, "label_id": int, "start": int, "end": int,      # original frames, end exclusive
     "start_s": float, "end_s": float,   # the frames' timestamps (pts) from the first frame: right on VFR video
     "confidence": float,                                                        # mean max softmax prob
     "emitted_at_frame": int,        # original frames decoded when the event was emitted
     "latency_s": float}             # wall time from decoding the chunk that closed it to the emission

``emitted_at_frame - end`` is the algorithmic delay (chunk wait + look-ahead), in original frames.
Sampling is by frame index (every ``sample_rate``-th decoded frame), or, with
``DecodeOptions(timing="time")``, on a constant time grid at the model's frame rate (FFmpeg's ``fps``
filter: a variable-frame-rate video then shows the model frames as evenly spaced as in training, and
"original frames" are the frames of that grid); the summary says which (``sampling``).
Whole-video models (``lookahead is None``) are fed the whole video in one call at its end (files only).

Real time (`LagMeter`): a live source (URL, device) delivers frames at its own pace and a slow consumer
falls behind it; ``realtime=True`` also paces a file at its frame rate, so that the same measurement
can be made on a file. Nothing is ever dropped: the report says how far behind (seconds) and how many
chunks were labelled after the next one had already arrived.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.decode import DecodeOptions
from ..data.layout import VIDEO_SUFFIXES, is_video_file
from .runtime import Streamer
from .sources import StreamSource, is_stream, source_name

__all__ = ["LagMeter", "Progress", "SegmentTracker", "VideoResult", "frame_labels", "infer_stream", "infer_video",
           "open_source", "sources", "video_files"]

def _softmax(logits: np.ndarray) -> np.ndarray:
    """(K, T) logits -> (K, T) probabilities."""
    z = np.exp(logits - logits.max(axis=0, keepdims=True))
    return z / z.sum(axis=0, keepdims=True)


@dataclass
class SegmentTracker:
    """Builds segments from per-frame labels that arrive in order; calls ``emit(event)`` as each closes.

    ``push(labels (n,), confidences (n,), chunk_time)`` for the next n original frames (``chunk_time``:
    when their chunk was decoded); ``finish(num_frames, chunk_time)`` closes the open segment at the
    video's true end (a last sampled frame may cover frames past it). ``time_of(i)``: the media time
    (seconds) of original frame ``i`` (its timestamp; `StreamSource.time_of`), or None for ``i / fps``.
    """

    video: str
    class_names: list[str]
    fps: float
    emit: Callable[[dict[str, Any]], None]
    time_of: Callable[[int], float] | None = None
    _label: int = -1
    _start: int = 0
    _next: int = 0  # index of the next frame pushed
    _conf_sum: float = 0.0  # the open segment's confidences
    _conf_count: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def _close(self, end: int, decoded: int, chunk_time: float) -> None:
        event = {
            "video": self.video, "label": self.class_names[self._label], "label_id": self._label,
            "start": self._start, "end": end,
            "start_s": self._seconds(self._start), "end_s": self._seconds(end),
            "confidence": round(self._conf_sum / self._conf_count, 5), "emitted_at_frame": decoded,
            "latency_s": round(time.perf_counter() - chunk_time, 6),
        }
        self.events.append(event)
        self.emit(event)

    def _seconds(self, frame: int) -> float | None:
        if self.time_of is not None:
            return round(float(self.time_of(frame)), 4)
        return round(frame / self.fps, 4) if self.fps else None

    def push(self, labels: np.ndarray, confidences: np.ndarray, chunk_time: float) -> None:
        n = len(labels)
        if n == 0:
            return
        decoded = self._next + n  # frames that had arrived when this chunk was labelled
        labels = np.asarray(labels)
        # the chunk's runs of equal labels, found at once: a server labels every stream's chunk on its engine
        # thread, and a model whose labels flicker (untrained, or near a boundary) makes a run of most frames
        cuts = np.flatnonzero(labels[1:] != labels[:-1]) + 1
        confidences = np.asarray(confidences, dtype=np.float64)
        if len(cuts) == 0:  # one run (the common case)
            runs = [(0, n, int(labels[0]), float(confidences.sum()))]
        else:
            starts = np.concatenate(([0], cuts))
            runs = zip(starts.tolist(), [*cuts.tolist(), n], labels[starts].tolist(),
                       np.add.reduceat(confidences, starts).tolist())
        for start, end, label, total in runs:
            if label != self._label:
                if self._label >= 0:
                    self._close(self._next + start, decoded, chunk_time)
                self._label, self._start, self._conf_sum, self._conf_count = label, self._next + start, 0.0, 0
            self._conf_sum += total
            self._conf_count += end - start
        self._next += n

    def finish(self, num_frames: int, chunk_time: float) -> None:
        if self._label >= 0:
            self._close(min(self._next, num_frames), num_frames, chunk_time)
            self._label = -1


@dataclass
class VideoResult:
    """One source's labelling. ``labels``: int64 (num_frames,) at the original frame rate; ``events``: the
    segments in the order they closed; ``seconds``: wall time; ``realtime``: the lag report
    (`LagMeter.summary`) for a live source or a ``realtime`` run, else None; ``interrupted``: a live
    source stopped by Ctrl-C (the labels cover the frames that had arrived); ``ended_early``: why the
    source ended before its end (a decoding error, a cut file; the labels cover what decoded), else None;
    ``footage``: how it was decoded (`footage` of the source: sampling, rotation, interlacing, filters)."""

    name: str
    labels: np.ndarray
    events: list[dict[str, Any]]
    seconds: float
    source: str = ""
    fps: float = 0.0
    realtime: dict[str, Any] | None = None
    interrupted: bool = False
    ended_early: str | None = None
    footage: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: video, source, frames, segments, seconds, frames_per_s, fps, realtime, interrupted,
        ended_early, and the `footage` keys (sampling, rotation, interlaced, filters)."""
        return {"video": self.name, "source": self.source, "frames": int(len(self.labels)),
                "segments": len(self.events), "seconds": round(self.seconds, 4),
                "frames_per_s": round(len(self.labels) / max(self.seconds, 1e-9), 2), "fps": self.fps,
                "realtime": self.realtime, "interrupted": self.interrupted, "ended_early": self.ended_early,
                **self.footage}


def footage(source: StreamSource) -> dict[str, Any]:
    """How ``source`` was decoded, for a summary: ``sampling`` (``"index"``: every ``sample_rate``-th
    decoded frame; ``"time"``: on a constant grid at ``fps``), ``rotation`` (degrees counter-clockwise
    the frames were turned upright by), ``interlaced``, ``filters`` (the FFmpeg filter chain)."""
    options = source.decode
    return {"sampling": options.timing, "rotation": source.rotation, "interlaced": source.interlaced,
            "filters": source.filters}


class LagMeter:
    """How far the labels are behind a real-time source, chunk by chunk.

    A source frame with media time ``t`` is available at ``first_frame_wall + t``; a chunk's lag is the
    wall time its labels were ready minus when its last frame became available (0 when ahead, e.g. a
    network server sending a file faster than real time). A chunk is *late* when its lag exceeds the
    chunk period (``chunk * sample_rate / fps`` seconds): the next chunk had already arrived, so the
    consumer has fallen behind the source. Nothing is dropped; the lag grows instead.
    """

    def __init__(self, period_s: float | None, paced: bool, fps: float) -> None:
        self.period_s, self.paced, self.fps = period_s, paced, fps
        self.lags: list[float] = []
        self.late = 0
        self.media_s = 0.0

    def record(self, lag_s: float, media_s: float) -> None:
        lag_s = max(0.0, lag_s)
        self.lags.append(lag_s)
        self.media_s = media_s
        if self.period_s is not None and lag_s > self.period_s:
            self.late += 1

    @property
    def last(self) -> float | None:
        return self.lags[-1] if self.lags else None

    def summary(self, wall_s: float) -> dict[str, Any]:
        lags = self.lags or [0.0]
        return {"paced": self.paced, "source_fps": self.fps, "chunk_period_s": self.period_s,
                "chunks": len(self.lags), "late_chunks": self.late, "behind": self.late > 0,
                "max_lag_s": round(max(lags), 4), "mean_lag_s": round(float(np.mean(lags)), 4),
                "final_lag_s": round(lags[-1], 4), "media_s": round(self.media_s, 4), "wall_s": round(wall_s, 4),
                "speed": round(self.media_s / wall_s, 3) if wall_s > 0 else None}


@dataclass
class Progress:
    """What a live view shows after each chunk: original frames labelled so far (of ``num_frames`` when
    known), the newest frame's label and confidence, sampled frames labelled per wall second, and for a
    real-time run the current lag (seconds behind the source) and late chunks so far."""

    video: str
    frames: int
    num_frames: int | None
    label: str
    confidence: float
    fps: float
    elapsed_s: float
    lag_s: float | None = None
    late_chunks: int = 0


def frame_labels(logits: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """One chunk's logits ``(K, T)`` at the sample rate -> labels and confidences (max softmax
    probability) per *original* frame, ``(T * sample_rate,)`` each: a sampled frame covers the
    ``sample_rate`` original frames from it on."""
    probs = _softmax(logits)
    return np.repeat(probs.argmax(0), sample_rate), np.repeat(probs.max(0), sample_rate)


FramesHook = Callable[[list[Any], np.ndarray, np.ndarray], None]


def infer_stream(streamer: Streamer, source: StreamSource, chunk: int | None = None,
                 emit: Callable[[dict[str, Any]], None] = lambda e: None, *, name: str | None = None,
                 realtime: bool = False, on_frames: FramesHook | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> VideoResult:
    """Label a source (file, URL or device, see `StreamSource`) chunk by chunk as its frames arrive;
    ``emit`` each segment event as it closes.

    ``chunk``: sampled frames per call (default: the model's training chunk size, else 32).
    ``realtime``: pace the source at its frame rate (a file is then read no faster than it would play)
    and report the lag (`LagMeter`); live sources are always measured, paced only when asked.
    ``on_frames(frames, labels, confidences)``: each original frame (``av.VideoFrame``) once labelled, in
    order (for `AnnotatedVideoWriter`). ``on_progress(Progress)``: after every chunk.
    Ctrl-C ends a live source cleanly: the open segment closes and the frames so far are returned.
    """
    meta = streamer.meta
    where = source.source
    if meta.input_kind != "frames":
        raise ValueError(f"{where}: this model reads pre-extracted features ({meta.sample_shape}), not video")
    if not meta.streaming and (source.live or realtime):
        raise ValueError(f"{where}: this model has no look-ahead bound (it needs whole videos), so it cannot "
                         "label a live source or run in real time; use a streaming (causal) model")
    if source.sample_rate != meta.sample_rate:
        raise ValueError(f"{where}: source samples every {source.sample_rate} frames, the model every "
                         f"{meta.sample_rate}")
    chunk = chunk or meta.chunk_size or 32
    sr = meta.sample_rate
    fps = source.fps or meta.fps
    source.keep_frames = source.keep_frames or on_frames is not None
    lag = LagMeter(chunk * sr / fps if fps else None, realtime, fps) if realtime or source.live else None
    tracker = SegmentTracker(name or source_name(where), meta.class_names, fps, emit, source.time_of)
    full: list[np.ndarray] = []
    annotated = _FrameLabels(on_frames) if on_frames is not None else None
    held: list[torch.Tensor] = []  # whole-video models: everything, labelled at the end
    started = chunk_time = time.perf_counter()
    sampled_done, last_conf = 0, 0.0
    interrupted = False

    def label(frames: torch.Tensor, state: Any) -> Any:
        nonlocal sampled_done, last_conf
        logits, state = streamer.step(meta.preprocess(frames), state)
        lab, conf = frame_labels(logits[0], sr)
        full.append(lab)
        tracker.push(lab, conf, chunk_time)
        sampled_done, last_conf = sampled_done + len(frames), float(conf[-1])
        if annotated is not None:
            annotated.add(source.take_frames(), lab, conf)
        return state

    state = streamer.init_state(1)
    try:
        while len(frames := source.read(chunk)) > 0:
            chunk_time = time.perf_counter()
            due = (source.first_frame_wall or chunk_time) + source.media_time_s  # the chunk's last frame
            if realtime and due > chunk_time:  # a file (or a fast server) played at its frame rate
                time.sleep(due - chunk_time)
                chunk_time = time.perf_counter()
            if not meta.streaming:
                held.append(frames)
                continue
            state = label(frames, state)
            if lag is not None:
                lag.record(time.perf_counter() - due, source.media_time_s)
            if on_progress is not None:
                now = time.perf_counter()
                labelled = min(sum(len(f) for f in full), source.decoded)  # the last label covers frames to come
                on_progress(Progress(tracker.video, int(labelled), source.num_frames,
                                     meta.class_names[int(full[-1][-1])], last_conf,
                                     sampled_done / max(now - started, 1e-9), now - started,
                                     lag.last if lag else None, lag.late if lag else 0))
    except KeyboardInterrupt:
        if not source.live:
            raise
        interrupted = True
    if held:
        state = label(torch.cat(held), state)
    num_frames = source.num_frames if source.num_frames is not None and source.ended else source.decoded
    labels_full = np.concatenate(full)[:num_frames] if full else np.zeros(0, np.int64)
    tracker.finish(num_frames, chunk_time)
    if annotated is not None:
        annotated.add(source.take_frames())  # the last sampled frame's cover; surplus labels are dropped
    seconds = time.perf_counter() - started
    return VideoResult(tracker.video, labels_full.astype(np.int64), tracker.events, seconds, where, fps,
                       lag.summary(seconds) if lag else None, interrupted, source.ended_early, footage(source))


class _FrameLabels:
    """Pairs decoded original frames with their labels as both arrive and hands the pairs to ``hook``.

    A sampled frame's label covers the next ``sample_rate - 1`` original frames too, which may not be
    decoded yet when its chunk is labelled: those labels wait here for their frames."""

    def __init__(self, hook: FramesHook) -> None:
        self.hook = hook
        self.frames: list[Any] = []
        self.labels: list[int] = []
        self.confidences: list[float] = []

    def add(self, frames: list[Any], labels: np.ndarray | None = None, confidences: np.ndarray | None = None) -> None:
        self.frames.extend(frames)
        if labels is not None:
            self.labels.extend(labels.tolist())
            self.confidences.extend(confidences.tolist())
        n = min(len(self.frames), len(self.labels))
        if n:
            self.hook(self.frames[:n], np.array(self.labels[:n], np.int64), np.array(self.confidences[:n]))
            del self.frames[:n], self.labels[:n], self.confidences[:n]


def open_source(source: str | Path, streamer: Streamer, *, sampling: str = "index", deinterlace: str = "auto",
                **kwargs: Any) -> StreamSource:
    """A `StreamSource` decoding ``source`` at the model's sample rate and input size. ``sampling``:
    ``"index"`` (every ``sample_rate``-th decoded frame) or ``"time"`` (a constant grid at the model's
    training fps first, `DecodeOptions`); ``deinterlace``: ``"auto"``, ``"on"``, ``"off"``; ``kwargs``:
    `StreamSource`'s."""
    meta = streamer.meta
    if meta.input_kind != "frames":
        raise ValueError(f"{source}: this model reads pre-extracted features ({meta.sample_shape}), not video")
    decode = DecodeOptions(deinterlace=deinterlace, timing=sampling, fps=meta.fps if sampling == "time" else None)
    return StreamSource(source, meta.sample_rate, tuple(meta.sample_shape[1:]), decode=decode, **kwargs)


def infer_video(streamer: Streamer, path: str | Path, chunk: int | None = None,
                emit: Callable[[dict[str, Any]], None] = lambda e: None, **kwargs: Any) -> VideoResult:
    """`infer_stream` on a video file (or a URL / device); ``kwargs``: `infer_stream`'s."""
    with open_source(path, streamer) as source:
        return infer_stream(streamer, source, chunk, emit, **kwargs)


def video_files(source: str | Path, skipped: list[Path] | None = None) -> Iterator[Path]:
    """A video file, or the video files of a folder (sorted; `VIDEO_SUFFIXES`, any case). ``skipped``,
    when given, receives the folder's other files (not its sub-folders or hidden files)."""
    source = Path(source)
    if source.is_dir():
        entries = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
        files = [p for p in entries if is_video_file(p)]
        if skipped is not None:
            skipped += [p for p in entries if not is_video_file(p)]
        if not files:
            raise FileNotFoundError(f"{source}: no video files ({', '.join(VIDEO_SUFFIXES)}, any case)")
        yield from files
    elif source.is_file():
        yield source
    else:
        raise FileNotFoundError(f"{source}: no such video file or folder (nor a URL, /dev/ device or FORMAT:TARGET)")


def sources(source: str | Path, skipped: list[Path] | None = None) -> list[str | Path]:
    """What `streamseg infer SOURCE` labels: a stream (URL, device, ``FORMAT:TARGET``) as is, a file, or
    the video files of a folder (its other files are added to ``skipped``)."""
    return [str(source)] if is_stream(source) else list(video_files(source, skipped))
