"""Continuous batching: many streams through one model, each step one batch of every ready stream's next chunk.

A `StreamPool` owns one `Streamer` (ONNX Runtime or PyTorch, see `streamseg.deploy.runtime`) and a
set of stream *slots*. Each slot has its own state (``streamer.init_state(1)`` when the stream starts,
never shared or reused), a bounded queue of chunks and a `SegmentTracker`. One engine thread loops:

    take the next chunk of every slot that has one ready (at most one per slot)
    group them by length T (a stream's last chunk is short), and per group:
        x = concat of the preprocessed chunks on the batch axis; state = concat of their states
        logits, state = streamer.step(x, state)        # one call for the whole group
        (a PyTorch streamer instead takes the uint8 chunks: step_frames, normalised on its device; with
        stage_chunks each chunk was moved there beforehand by the thread that made it, stage_frames;
        with fixed_batch the chunks go to their streams' rows of one fixed-shape step, whose rows hold
        the states: nothing is concatenated or split)
        split logits and state back to the slots; label; emit the segment events that closed

Streams join and leave at any time: a new slot is picked up at the next step, a removed one is
finished (its open segment closed) and dropped, and the other slots' states are untouched. The labels
and events of a stream are those `streamseg.deploy.infer.infer_stream` gives for the same source and
chunk length (same decode, same chunks, same `frame_labels` and `SegmentTracker`), up to float
rounding of batched kernels.

Sources: ``add(source=...)`` pulls from anything `StreamSource` opens (file, URL, device) in a reader
thread, optionally paced at the source's frame rate (``realtime``). A reader decodes with one FFmpeg
thread (``decode_threads=1``, unless ``source_options`` say otherwise) and resizes with one torch thread:
many readers share the cores, and one pool of threads per reader (FFmpeg's, OpenMP's) would only
oversubscribe them. With ``decode_workers=N`` the readers run in N worker processes instead
(`streamseg.deploy.pull.DecodeWorkers`: the engine then has the process's GIL to itself).
``add(source=None)`` makes a *push* slot fed by `push` (sampled uint8 frames ``(n, 3, H, W)`` at the
model's input size) and `end`.

Buffer policy: each slot holds at most ``buffer_chunks`` chunks. A full buffer blocks the producer (the
reader thread stops decoding; a pushing client's `push` waits): nothing is ever dropped. A live source
whose consumer cannot keep up thus falls behind, and `LagMeter` reports it (lag in seconds, *late*
chunks: labelled after the next one had already arrived).

Failures: opening a source is retried ``retries`` times with exponential backoff (1, 2, 4, ... s, at
most 30 s), each attempt reported as a ``retrying`` status event; a source that fails for good, or
fails mid-stream, ends its stream with status ``error`` (segments so far closed and emitted). A stream
added with ``reconnect`` (live sources only) is opened again when its source ends or fails mid-stream,
with the same retries (``retrying`` events saying why the connection was lost), and goes on where it
was: same id, model state and open segment, frame numbers and media time counting on, a ``running``
event with ``reconnected: n``; it ends with ``error`` only once the retries after a loss fail. Why
keep the state: a camera that drops for seconds shows the same scene when it is back, as after a gap
of dropped frames; a stream that must start afresh is removed and added again. A model
step that raises fails only the streams of that batch.

Events go to ``on_event(stream_id, event)``: segment events (the JSON objects `infer` prints; ``video``
is the stream id) and status events ``{"stream": id, "status": "running" | "retrying" | "ended" |
"error" | "removed", ...}`` (no ``label`` key).
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .infer import LagMeter, SegmentTracker, frame_labels
from .pull import DecodeWorkers, pull_stream
from .runtime import Streamer
from .sources import is_stream, source_name

__all__ = ["PoolFull", "StepTiming", "StreamPool", "UnknownStream"]

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KEEP_FINISHED = 256  # finished streams kept for status queries (oldest forgotten first)


@dataclass
class StepTiming:
    """One model call of the engine (``on_step``). batch: streams in it. seconds: the whole step
    (preprocessing, the model, labels and events). model_s: ``streamer.step`` alone (with a PyTorch
    streamer ``step_frames``: the upload of the uint8 chunks, their normalisation and the model). latencies_s: per
    chunk, from the moment it was queued (its last frame read from the source) to its labels and events,
    so the server adds ``latency - model_s`` to the model's own time (queue wait, batching, pre- and
    post-processing)."""

    batch: int
    seconds: float
    model_s: float
    latencies_s: list[float]


class UnknownStream(KeyError):
    """No stream with this id."""


class PoolFull(RuntimeError):
    """All stream slots are taken."""


@dataclass
class _Chunk:
    frames: torch.Tensor  # uint8 (T, 3, H, W) sampled frames
    arrived: float  # perf_counter when read (or paced)
    due: float | None = None  # when its last frame became available at the source's pace (pull only)
    media_s: float = 0.0


@dataclass
class _End:
    num_frames: int | None  # original frames of the stream; None: those labelled
    error: str | None = None


@dataclass
class _Slot:
    id: str
    source: str | None
    realtime: bool
    fps: float
    chunk: int
    queue: queue.Queue
    state: Any
    stop: threading.Event = field(default_factory=threading.Event)
    tracker: SegmentTracker | None = None
    lag: LagMeter | None = None
    labels: list[np.ndarray] = field(default_factory=list)
    pending: list[torch.Tensor] = field(default_factory=list)  # pushed frames not yet a whole chunk
    status: str = "starting"
    error: str | None = None
    frames: int = 0  # original frames labelled
    chunks: int = 0
    retries: int = 0
    reconnect: bool = False
    reconnects: int = 0
    created: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    last_label: str | None = None
    last_time: float = 0.0
    ended_input: bool = False
    worker: int | None = None  # the decode worker process reading it (None: a thread of this process)
    row: int | None = None  # its row of a fixed-batch step

    def info(self) -> dict[str, Any]:
        """JSON-ready status: frames labelled, chunks, lag and late chunks (real-time or live), errors."""
        lag = self.lag
        return {"id": self.id, "source": self.source, "kind": "pull" if self.source is not None else "push",
                "status": self.status, "error": self.error, "realtime": self.realtime, "fps": self.fps,
                "frames": self.frames, "chunks": self.chunks, "queued_chunks": self.queue.qsize(),
                "segments": len(self.tracker.events) if self.tracker else 0, "label": self.last_label,
                "lag_s": round(lag.last, 4) if lag and lag.last is not None else None,
                "max_lag_s": round(max(lag.lags), 4) if lag and lag.lags else None,
                "late_chunks": lag.late if lag else 0, "retries": self.retries, "reconnect": self.reconnect,
                "reconnects": self.reconnects, "worker": self.worker,
                "created": self.created,
                "seconds": round(self.seconds or time.perf_counter() - self.started, 4)}


def _cat(states: list[Any]) -> Any:
    """Per-slot states (batch 1 each) -> one batched state (concatenated on dim 0)."""
    if not states[0]:
        return states[0]
    parts = zip(*states)
    return type(states[0])(np.concatenate(p) if isinstance(p[0], np.ndarray) else torch.cat(p) for p in parts)


def _split(state: Any, batch: int) -> list[Any]:
    if not state:
        return [state] * batch
    return [type(state)(t[b:b + 1] for t in state) for b in range(batch)]


class StreamPool:
    """Stream slots batched through one streamer (see the module docstring).

    Args:
        streamer: a streaming model (``meta.lookahead`` not None; frames input).
        chunk: sampled frames per chunk (default: the model's training chunk, else 32; as `infer`).
        max_streams: slots; `add` raises `PoolFull` beyond.
        buffer_chunks: chunks a slot may hold before its producer waits.
        retries: attempts to (re)open a failing pull source, with exponential backoff from ``backoff_s``.
        on_event: ``(stream_id, event)`` for every segment and status event (from the engine or a reader
            thread: it must be quick and thread-safe).
        on_step: a `StepTiming` after every model call (from the engine thread: it must be quick).
        source_options: `StreamSource` keyword arguments for pull sources (fmt, options, timeout_s, max_frames,
            decode_threads).
        decode_workers: read pull sources in this many worker processes (`streamseg.deploy.pull.DecodeWorkers`)
            instead of reader threads of this process (0, default). Worth it with many sources and a GPU
            model: reader threads compete with the engine for the GIL.
        stage_chunks: a PyTorch streamer on a GPU gets each chunk uploaded by the thread that made it
            (`TorchStreamer.stage_frames`) instead of the engine uploading a step's chunks at once.
        fixed_batch: a PyTorch streamer runs as one fixed-batch step of ``max_streams`` rows, each stream's
            state in its own row, compiled and captured in a CUDA graph on a GPU
            (`streamseg.deploy.fixed_step.FixedBatchStep`); it compiles when the pool starts.
    """

    def __init__(self, streamer: Streamer, chunk: int | None = None, *, max_streams: int = 64,
                 buffer_chunks: int = 4, retries: int = 3, backoff_s: float = 1.0,
                 on_event: Callable[[str, dict[str, Any]], None] = lambda s, e: None,
                 on_step: Callable[[StepTiming], None] = lambda timing: None,
                 source_options: dict[str, Any] | None = None, decode_workers: int = 0,
                 stage_chunks: bool = False, fixed_batch: bool = False) -> None:
        meta = streamer.meta
        if meta.input_kind != "frames":
            raise ValueError(f"{meta.source or 'model'}: reads pre-extracted features, a server needs a video model")
        if not meta.streaming:
            raise ValueError(f"{meta.source or 'model'}: no look-ahead bound (whole videos only), cannot serve streams")
        self.streamer, self.meta = streamer, meta
        self.chunk = chunk or meta.chunk_size or 32
        if getattr(streamer, "compiled", False):  # a compiled TorchStreamer: graphs for full chunks only
            streamer.compiled_chunk = self.chunk
        # PyTorch streamers take the uint8 chunks and normalise them on their device (TorchStreamer.step_frames);
        # the thread that makes a chunk (reader or pusher) moves it there first (stage_frames)
        self._step_frames = getattr(streamer, "step_frames", None)
        stages = self._step_frames is not None and stage_chunks
        self._stage = getattr(streamer, "stage_frames", None) if stages else None
        self._torch_threads = torch.get_num_threads()  # the engine's own (readers run one each)
        self.max_streams, self.buffer_chunks = max_streams, buffer_chunks
        self.retries, self.backoff_s = retries, backoff_s
        self.on_event, self.on_step = on_event, on_step
        self.source_options = {"decode_threads": 1, **(source_options or {})}
        self._slots: dict[str, _Slot] = {}
        self._finished: OrderedDict[str, _Slot] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.steps = 0
        self.failed_steps = 0
        self.event_errors = 0  # on_event calls that raised
        if decode_workers < 0:
            raise ValueError(f"decode_workers must be >= 0, got {decode_workers}")
        self._fixed = None
        if fixed_batch:
            if self._step_frames is None:
                raise ValueError(f"{meta.source or 'model'}: fixed_batch needs a PyTorch model (a run directory or "
                                 "checkpoint), not an ONNX export")
            from .fixed_step import FixedBatchStep

            self._fixed = FixedBatchStep(streamer, max_streams, self.chunk)
            self._fixed.warm_up()
        # the workers' chunk buffers are page-locked when a PyTorch model on a GPU uploads from them
        device = getattr(streamer, "device", None)
        gpu = self._step_frames is not None and isinstance(device, torch.device) and device.type == "cuda"
        pin = device if gpu else None
        self._decoders = (DecodeWorkers(decode_workers, meta, self.source_options, self.chunk, retries, backoff_s,
                                        self._deliver, pin=pin) if decode_workers else None)
        self._engine = threading.Thread(target=self._loop, name="streamseg-engine", daemon=True)
        self._engine.start()

    # ---- control (any thread) ----
    @property
    def alive(self) -> bool:
        return self._engine.is_alive() and not self._stop.is_set()

    def add(self, source: str | None = None, name: str | None = None, *, realtime: bool = False,
            fps: float | None = None, reconnect: bool = False) -> str:
        """A new stream: pull ``source`` (file, URL, device), or a push slot when None. Returns its id
        (``name``, else the source's name, made unique with ``-2``, ``-3``, ...). ``reconnect``: a live
        source (URL, device) that ends or fails is opened again and the stream goes on (`pull_stream`)."""
        if name is not None and not NAME.match(name):
            raise ValueError(f"stream name {name!r}: expected 1-64 characters of A-Z a-z 0-9 _ . -")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if reconnect and (source is None or not is_stream(source)):
            raise ValueError(f"reconnect needs a live source (a URL or a device), not "
                             f"{'a push stream' if source is None else 'the file ' + repr(str(source))}: "
                             "opening a file again would replay it")
        pulled = source is not None and self._decoders is not None
        with self._lock:
            if len(self._slots) >= self.max_streams:
                raise PoolFull(f"all {self.max_streams} stream slots are taken")
            base = name or (source_name(source) if source is not None else "push")
            sid, n = base, 1
            while sid in self._slots or sid in self._finished:
                if name is not None:
                    raise ValueError(f"stream name {name!r} is taken")
                n += 1
                sid = f"{base}-{n}"
            # a worker's stream may queue a chunk in each ring buffer and then its end (credits bound the chunks)
            size = self.buffer_chunks + (2 if pulled else 0)
            fixed = self._fixed is not None  # its state lives in a row of the fixed step
            slot = _Slot(sid, source, realtime, float(fps or self.meta.fps), self.chunk, queue.Queue(size),
                         None if fixed else self.streamer.init_state(1),
                         row=self._fixed.take_row() if fixed else None, reconnect=reconnect)
            if pulled:
                # given to its worker before anyone can see the slot (remove, the engine's credits); the
                # worker's first messages wait for this lock in _deliver, so none finds the slot missing. The
                # worker makes the stream's ring (buffer_chunks waiting chunks and one for the chunk a step
                # reads, see deploy.pull), so adding a stream costs this process no shared memory
                try:
                    slot.worker = self._decoders.add(sid, source, realtime, self.buffer_chunks + 1, reconnect)
                except RuntimeError:  # no worker left
                    if slot.row is not None:
                        self._fixed.give_row(slot.row)
                    raise
            self._slots[sid] = slot
        if source is None:
            self._start_tracking(slot, slot.fps)
        elif self._decoders is None:
            threading.Thread(target=self._pull, args=(slot,), name=f"streamseg-pull-{sid}", daemon=True).start()
        self._wake.set()
        return sid

    def remove(self, sid: str) -> None:
        """Stop a stream now: its open segment is closed (emitted) and its slot freed."""
        slot = self._get(sid, live_only=True)
        slot.stop.set()
        self._wake.set()

    def push(self, sid: str, frames: torch.Tensor, timeout_s: float | None = None) -> None:
        """Sampled frames ``uint8 (n, 3, H, W)`` for a push stream; blocks while its buffer is full."""
        slot = self._get(sid, live_only=True)
        if slot.source is not None:
            raise ValueError(f"stream {sid} pulls from its source; frames cannot be pushed to it")
        want = (3, *self.meta.sample_shape[1:])
        if frames.dtype != torch.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != want:
            raise ValueError(f"stream {sid}: expected uint8 frames (n, {', '.join(map(str, want))}), got "
                             f"{str(frames.dtype).replace('torch.', '')} {tuple(frames.shape)}")
        if slot.ended_input:
            raise ValueError(f"stream {sid} has ended")
        slot.pending.append(frames)
        have = torch.cat(slot.pending)
        whole = len(have) // self.chunk * self.chunk
        slot.pending = [have[whole:]] if whole < len(have) else []
        for start in range(0, whole, self.chunk):
            self._put(slot, self._chunk(have[start:start + self.chunk]), timeout_s)

    def end(self, sid: str, num_frames: int | None = None, timeout_s: float | None = None) -> None:
        """No more frames for a push stream; ``num_frames``: its original frame count (default: those labelled)."""
        slot = self._get(sid, live_only=True)
        if slot.source is not None:
            raise ValueError(f"stream {sid} pulls from its source; remove it instead")
        if slot.pending:
            self._put(slot, self._chunk(torch.cat(slot.pending)), timeout_s)
            slot.pending = []
        slot.ended_input = True
        self._put(slot, _End(num_frames), timeout_s)

    def info(self, sid: str) -> dict[str, Any]:
        return self._get(sid).info()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            slots = [*self._slots.values(), *self._finished.values()]
        return [s.info() for s in slots]

    def events(self, sid: str) -> list[dict[str, Any]]:
        """The segment events of a stream so far (all of them once it has finished)."""
        slot = self._get(sid)
        return list(slot.tracker.events) if slot.tracker else []

    def labels(self, sid: str) -> np.ndarray:
        """Per original frame labels so far (int64)."""
        slot = self._get(sid)
        return np.concatenate(slot.labels).astype(np.int64) if slot.labels else np.zeros(0, np.int64)

    def active(self) -> int:
        with self._lock:
            return len(self._slots)

    def close(self) -> None:
        """Stop every stream (finished as removed) and the engine."""
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            slot.stop.set()
        self._wake.set()
        deadline = time.perf_counter() + 5.0
        while self.active() and self._engine.is_alive() and time.perf_counter() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._wake.set()
        self._engine.join(timeout=5.0)
        if self._decoders is not None:
            self._decoders.close()

    # ---- internals ----
    def _get(self, sid: str, live_only: bool = False) -> _Slot:
        with self._lock:
            slot = self._slots.get(sid) or (None if live_only else self._finished.get(sid))
        if slot is None:
            raise UnknownStream(sid)
        return slot

    def _put(self, slot: _Slot, item: Any, timeout_s: float | None = None) -> bool:
        """Into the slot's buffer, waiting while it is full; False when the stream was stopped meanwhile."""
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        while not slot.stop.is_set():
            try:
                slot.queue.put(item, timeout=0.05)
                self._wake.set()
                return True
            except queue.Full:
                if deadline is not None and time.perf_counter() > deadline:
                    raise TimeoutError(f"stream {slot.id}: buffer full for {timeout_s} s") from None
        return False

    def _chunk(self, frames: torch.Tensor, due: float | None = None, media_s: float = 0.0,
               arrived: float | None = None) -> _Chunk:
        """A chunk to queue, timed when its frames were complete (``arrived``, default now), then moved to
        the model's device by this thread (reader, pusher or receiver) when the pool stages chunks."""
        arrived = time.perf_counter() if arrived is None else arrived
        return _Chunk(self._stage(frames) if self._stage is not None else frames, arrived, due, media_s)

    def _emit(self, sid: str, event: dict[str, Any]) -> None:
        """``on_event``, which must never stop the engine or a reader: its failures are only counted."""
        try:
            self.on_event(sid, event)
        except Exception:  # noqa: BLE001
            self.event_errors += 1

    def _start_tracking(self, slot: _Slot, fps: float) -> None:
        slot.fps = fps
        slot.tracker = SegmentTracker(slot.id, self.meta.class_names, fps, lambda e: self._emit(slot.id, e))
        slot.status = "running"
        self._emit(slot.id, {"stream": slot.id, "status": "running", "source": slot.source, "fps": fps})

    def _running(self, slot: _Slot, fps: float, live: bool) -> None:
        if slot.realtime or live:
            slot.lag = LagMeter(self.chunk * self.meta.sample_rate / fps, slot.realtime, fps)
        self._start_tracking(slot, fps)

    def _retrying(self, slot: _Slot, attempt: int, delay: float, error: str) -> None:
        slot.retries = attempt
        self._emit(slot.id, {"stream": slot.id, "status": "retrying", "attempt": attempt, "delay_s": delay,
                             "error": error})

    def _pull(self, slot: _Slot) -> None:
        """Reader thread of a pull stream in this process (`pull_stream`); anything it raises ends the stream."""
        try:
            self._read(slot)
        except Exception as e:  # noqa: BLE001 (e.g. staging a chunk on a full GPU: the stream ends, named)
            self._put(slot, _End(None, f"reader failed: {type(e).__name__}: {e}"))

    def _read(self, slot: _Slot) -> None:
        pull_stream(slot.source, self.meta, self.source_options, self.chunk, slot.realtime, self.retries,
                    self.backoff_s, slot.stop, running=lambda fps, live: self._running(slot, fps, live),
                    retrying=lambda attempt, delay, error: self._retrying(slot, attempt, delay, error),
                    put_chunk=lambda frames, due, media_s: self._put(slot, self._chunk(frames, due, media_s)),
                    end=lambda num, error: self._put(slot, _End(num, error)), reconnect=slot.reconnect,
                    reconnected=lambda n: self._reconnected(slot, n))

    def _reconnected(self, slot: _Slot, n: int) -> None:
        """The stream's live source was lost and is open again (the ``n``-th time): the stream goes on, with
        its model state and its open segment."""
        slot.reconnects = n
        self._emit(slot.id, {"stream": slot.id, "status": "running", "reconnected": n, "source": slot.source})

    def _deliver(self, sid: str, msg: tuple) -> None:
        """A decode worker's message for stream ``sid`` (on its receiver thread; see `DecodeWorkers`)."""
        with self._lock:
            slot = self._slots.get(sid)
        if slot is None or slot.stop.is_set():
            return
        kind = msg[0]
        if kind == "running":
            self._running(slot, msg[1], msg[2])
        elif kind == "retrying":
            self._retrying(slot, *msg[1:])
        elif kind == "reconnected":
            self._reconnected(slot, msg[1])
        elif kind == "chunk":  # credits bound the chunks in flight to the slot's buffer
            frames, arrived, due, media_s = msg[1:]
            self._put(slot, self._chunk(frames, due, media_s, arrived))
        elif kind == "end":  # (a dead worker's end may follow the worker's own: it waits for room, or the stop)
            self._put(slot, _End(msg[1], msg[2]))

    def _loop(self) -> None:
        # torch's thread setting is also the default of threads started after it: the readers' one thread
        # must not become the engine's (a PyTorch model on the CPU runs here). Reading the setting first
        # makes torch initialise this thread's own, which it would otherwise do at its first parallel op.
        torch.get_num_threads()
        torch.set_num_threads(self._torch_threads)
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            with self._lock:
                slots = list(self._slots.values())
            ready: list[tuple[_Slot, _Chunk]] = []
            for slot in slots:
                if slot.stop.is_set():
                    self._finish(slot, None, None, "removed")
                    continue
                try:
                    item = slot.queue.get_nowait()
                except queue.Empty:
                    continue
                if isinstance(item, _End):
                    self._finish(slot, item.num_frames, item.error, "error" if item.error else "ended")
                else:
                    ready.append((slot, item))
            if ready:
                self._wake.set()  # more may be queued: look again right after this step
            by_length: dict[int, list[tuple[_Slot, _Chunk]]] = {}
            for slot, chunk in ready:
                by_length.setdefault(len(chunk.frames), []).append((slot, chunk))
            for group in by_length.values():
                self._step(group)
                # a worker's chunk is a view of its stream's ring buffer: the worker may rewrite it only now
                for slot, _ in group:
                    if slot.worker is not None:
                        self._decoders.credit(slot.id)

    def _step(self, group: list[tuple[_Slot, _Chunk]]) -> None:
        meta = self.meta
        t0 = time.perf_counter()
        try:
            if self._fixed is not None:
                t1 = time.perf_counter()
                logits = self._fixed.run([slot.row for slot, _ in group], [chunk.frames for _, chunk in group])
                state = None
            elif self._step_frames is not None:
                state = _cat([slot.state for slot, _ in group])
                t1 = time.perf_counter()
                logits, state = self._step_frames([chunk.frames for _, chunk in group], state)
            else:
                state = _cat([slot.state for slot, _ in group])
                x = np.concatenate([meta.preprocess(chunk.frames) for _, chunk in group])
                t1 = time.perf_counter()
                logits, state = self.streamer.step(x, state)
        except Exception as e:  # noqa: BLE001 (a failing batch ends its streams, never the server)
            self.failed_steps += 1
            for slot, _ in group:
                self._finish(slot, None, f"model step failed: {type(e).__name__}: {e}", "error")
            return
        self.steps += 1
        done = time.perf_counter()
        for (slot, chunk), row, new_state in zip(group, logits, _split(state, len(group))):
            slot.state = new_state
            lab, conf = frame_labels(row, meta.sample_rate)
            slot.labels.append(lab)
            slot.tracker.push(lab, conf, chunk.arrived)
            slot.frames += len(lab)
            slot.chunks += 1
            slot.last_label, slot.last_time = meta.class_names[int(lab[-1])], chunk.arrived
            if slot.lag is not None and chunk.due is not None:
                slot.lag.record(done - chunk.due, chunk.media_s)
        labelled = time.perf_counter()
        self.on_step(StepTiming(len(group), labelled - t0, done - t1, [labelled - c.arrived for _, c in group]))

    def _finish(self, slot: _Slot, num_frames: int | None, error: str | None, status: str) -> None:
        """Close the stream's open segment, free its slot, report how it ended."""
        labelled = sum(len(lab) for lab in slot.labels)
        num = labelled if num_frames is None else min(num_frames, labelled)
        if slot.labels:
            slot.labels = [np.concatenate(slot.labels)[:num]]
        if slot.tracker is not None:
            slot.tracker.finish(num, slot.last_time or time.perf_counter())
        slot.frames, slot.status, slot.error = num, status, error
        slot.seconds = time.perf_counter() - slot.started
        slot.stop.set()
        # chunks still queued (host, shared or GPU memory) go now, not with the finished slot kept for status
        slot.queue = queue.Queue()
        if slot.worker is not None:
            self._decoders.remove(slot.id)
        if slot.row is not None:
            self._fixed.give_row(slot.row)
            slot.row = None
        with self._lock:
            self._slots.pop(slot.id, None)
            self._finished[slot.id] = slot
            while len(self._finished) > KEEP_FINISHED:
                self._finished.popitem(last=False)
        event = {"stream": slot.id, "status": status, "frames": num,
                 "segments": len(slot.tracker.events) if slot.tracker else 0}
        if error:
            event["error"] = error
        self._emit(slot.id, event)
