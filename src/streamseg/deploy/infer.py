"""Online inference on a video file: chunk by chunk through a `Streamer`, segment events as they close.

Per video: PyAV decodes every ``sample_rate``-th frame at the model's input size (`VideoFileSource`,
the same decode and resize as training), `DeployMeta.preprocess` normalises, the streamer labels a
chunk, and each sampled frame's label covers the ``sample_rate`` original frames from it on (as
`streamseg.data.streams.upsample_to_full`). A segment closes when a frame gets a different label; its
event is emitted right then. The last segment closes at the end of the video.

Event (one JSON object per line)::

    {"video": str, "label": str, "label_id": int, "start": int, "end": int,      # original frames, end exclusive
     "start_s": float, "end_s": float, "confidence": float,                      # mean max softmax prob
     "emitted_at_frame": int,        # original frames decoded when the event was emitted
     "latency_s": float}             # wall time from decoding the chunk that closed it to the emission

``emitted_at_frame - end`` is the algorithmic delay (chunk wait + look-ahead), in original frames.
Whole-video models (``lookahead is None``) are fed the whole video in one call at its end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.video import VideoFileSource
from .runtime import Streamer

__all__ = ["SegmentTracker", "VideoResult", "infer_video", "video_files"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")


def _softmax(logits: np.ndarray) -> np.ndarray:
    """(K, T) logits -> (K, T) probabilities."""
    z = np.exp(logits - logits.max(axis=0, keepdims=True))
    return z / z.sum(axis=0, keepdims=True)


@dataclass
class SegmentTracker:
    """Builds segments from per-frame labels that arrive in order; calls ``emit(event)`` as each closes.

    ``push(labels (n,), confidences (n,), chunk_time)`` for the next n original frames (``chunk_time``:
    when their chunk was decoded); ``finish(num_frames, chunk_time)`` closes the open segment at the
    video's true end (a last sampled frame may cover frames past it).
    """

    video: str
    class_names: list[str]
    fps: float
    emit: Callable[[dict[str, Any]], None]
    _label: int = -1
    _start: int = 0
    _next: int = 0  # index of the next frame pushed
    _conf: list[float] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def _close(self, end: int, decoded: int, chunk_time: float) -> None:
        event = {
            "video": self.video, "label": self.class_names[self._label], "label_id": self._label,
            "start": self._start, "end": end,
            "start_s": round(self._start / self.fps, 4) if self.fps else None,
            "end_s": round(end / self.fps, 4) if self.fps else None,
            "confidence": round(float(np.mean(self._conf)), 5), "emitted_at_frame": decoded,
            "latency_s": round(time.perf_counter() - chunk_time, 6),
        }
        self.events.append(event)
        self.emit(event)

    def push(self, labels: np.ndarray, confidences: np.ndarray, chunk_time: float) -> None:
        decoded = self._next + len(labels)  # frames that had arrived when this chunk was labelled
        for label, conf in zip(labels.tolist(), confidences.tolist()):
            if label != self._label:
                if self._label >= 0:
                    self._close(self._next, decoded, chunk_time)
                self._label, self._start, self._conf = label, self._next, []
            self._conf.append(conf)
            self._next += 1

    def finish(self, num_frames: int, chunk_time: float) -> None:
        if self._label >= 0:
            self._close(min(self._next, num_frames), num_frames, chunk_time)
            self._label = -1


@dataclass
class VideoResult:
    name: str
    labels: np.ndarray  # int64 (num_frames,) at the original frame rate
    events: list[dict[str, Any]]
    seconds: float


def _expand(labels: np.ndarray, probs: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sampled frame -> per original frame (each covers sample_rate frames)."""
    return np.repeat(labels, sample_rate), np.repeat(probs, sample_rate)


def infer_video(streamer: Streamer, path: str | Path, chunk: int | None = None,
                emit: Callable[[dict[str, Any]], None] = lambda e: None,
                on_chunk: Callable[[torch.Tensor, np.ndarray], None] | None = None) -> VideoResult:
    """Label one video file chunk by chunk; ``emit`` each segment event as it closes.

    ``chunk``: sampled frames per call (default: the model's training chunk size, else 32).
    ``on_chunk(frames uint8 (n, 3, H, W), labels (n,))``: a hook per chunk (e.g. an annotated video).
    """
    meta = streamer.meta
    if meta.input_kind != "frames":
        raise ValueError(f"{path}: this model reads pre-extracted features ({meta.sample_shape}), not video")
    chunk = chunk or meta.chunk_size or 32
    path = Path(path)
    started = time.perf_counter()
    tracker = SegmentTracker(path.stem, meta.class_names, meta.fps, emit)
    sr = meta.sample_rate
    full: list[np.ndarray] = []
    with VideoFileSource(path, sr, tuple(meta.sample_shape[1:])) as source:
        state = streamer.init_state(1)
        held: list[torch.Tensor] = []  # whole-video models: everything, labelled at the end
        while True:
            frames = source.read(chunk)
            chunk_time = time.perf_counter()
            if len(frames) == 0:
                break
            if not meta.streaming:
                held.append(frames)
                continue
            logits, state = streamer.step(meta.preprocess(frames), state)
            probs = _softmax(logits[0])
            labels = probs.argmax(0)
            if on_chunk is not None:
                on_chunk(frames, labels)
            lab, conf = _expand(labels, probs.max(0), sr)
            full.append(lab)
            tracker.push(lab, conf, chunk_time)
        if held:
            frames = torch.cat(held)
            logits, _ = streamer.step(meta.preprocess(frames), state)
            probs = _softmax(logits[0])
            labels = probs.argmax(0)
            if on_chunk is not None:
                on_chunk(frames, labels)
            lab, conf = _expand(labels, probs.max(0), sr)
            full.append(lab)
            tracker.push(lab, conf, chunk_time)
        num_frames = source.num_frames  # exact once the source has been read to its end
    labels_full = np.concatenate(full)[:num_frames] if full else np.zeros(0, np.int64)
    tracker.finish(num_frames, chunk_time)
    return VideoResult(path.stem, labels_full.astype(np.int64), tracker.events, time.perf_counter() - started)


def video_files(source: str | Path) -> Iterator[Path]:
    """A video file, or the video files of a folder (sorted)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{source}: no video files ({', '.join(VIDEO_SUFFIXES)})")
        yield from files
    elif source.is_file():
        yield source
    else:
        raise FileNotFoundError(f"{source}: no such video file or folder")
