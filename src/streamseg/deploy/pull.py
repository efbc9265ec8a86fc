"""Reading the pull streams of a `streamseg.deploy.batcher.StreamPool`: in reader threads of the pool's
own process, or in decode worker processes.

`pull_stream` is the reader of one stream, wherever it runs: open the source (retried with exponential
backoff), read it chunk by chunk at the model's sample rate and input size, pace it at its frame rate when
asked, and hand each chunk and the stream's end to its caller's callbacks.

`DecodeWorkers` runs the readers in ``N`` worker processes (``StreamPool(decode_workers=N)``, ``streamseg
serve --decode-workers N``). Why: a reader thread spends much of its time in Python (PyAV's per-frame
objects, the conversion), holding the GIL that the engine thread needs for every operation of an eager
model step. With 64 file sources on one H200, 8 workers instead of 64 reader threads took the eager
model call from 316 to 234 ms (p50) and the server from 3,530 to 5,730 frames/s (docs/benchmarks.md,
"Fifth session"); `bench_pipeline`'s decode processes do the same for its step. Each worker runs one
reader thread per stream it owns; a stream goes to the worker that owns the fewest.

Chunks travel through a ring per stream (`ChunkRing`): ``buffer_chunks + 1`` chunk buffers in shared memory,
made by the stream's worker when it is given the stream and sent to the pool once, ahead of the chunks.
The worker copies each chunk into the next buffer and sends only its index; one receiver thread per
worker queues a view of that buffer in the stream's slot. Why not a shared-memory tensor per chunk (torch.multiprocessing's way, the
first version): each chunk then cost a new shared-memory file, a file-descriptor hand-over through the
worker and, in the pool's process, a fresh mapping whose every page faulted on the engine thread's first
read, 64 times per step with 64 streams. When the pool uploads to a GPU the ring is also page-locked
(``cudaHostRegister``, by the worker's receiver thread), so a chunk goes from the worker's buffer to the
GPU in one asynchronous copy. Why the worker makes the ring: the buffers are at the model's input size
(five of 32 frames are 24 MB at 224x224, 442 MB for a model that takes 1280x720 frames), and making them
is work in the making process (PyTorch reserves the file's pages). Made by `StreamPool.add`, each add
waited for it: 64 adds took 4.9-5.2 s (77-81 ms each) on a 2-core VM with 2 workers decoding, against
0.002-0.011 s now (`tools/bench_pool_add.py`, docs/benchmarks.md "Eighth session"). A worker makes its
streams' rings in parallel with the other workers, off the pool's process; a ring that cannot be made (a small
``/dev/shm``) ends its stream with status ``error`` naming it.

Flow control is per stream, by credits, one per ring buffer: the engine gives one back for each chunk
once the step that read it has finished, so a buffer is never rewritten while it is read. The ring has
one buffer more than ``buffer_chunks`` for the chunk a step is reading: ``buffer_chunks`` still bounds
the chunks waiting in the slot while one is in a step, as when the chunks were tensors of their own and
a credit came back as soon as the engine took a chunk (one H100 run with ``buffer_chunks`` buffers in
all found the server's steps with fewer streams ready than before the rings, docs/benchmarks.md). A
full ring stops that stream's reader only (as in a thread), never the worker's other streams.

Times (chunk arrival, pacing) are ``time.perf_counter()`` readings taken in the worker: the system-wide
monotonic clock, comparable across processes of one machine (Linux ``CLOCK_MONOTONIC``).

A worker that dies (killed, crashed in native code) ends each of its streams with status ``error``; the
pool starts a replacement for new streams. A worker whose pool's process dies without closing it (killed)
notices within a second (its parent process changes) and exits. A worker told to close stops its readers
and waits for them (at most ``CLOSE_READERS_S``) before it exits: a reader thread still inside FFmpeg or
torch when the process ends makes it abort ("terminate called without an active exception").
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

from .infer import open_source
from .runtime import DeployMeta

__all__ = ["ChunkRing", "DecodeWorkers", "MAX_BACKOFF_S", "host_register", "pull_stream", "ring_buffers"]

MAX_BACKOFF_S = 30.0
START_TIMEOUT_S = 120.0  # a worker imports torch and PyAV before its first stream
CLOSE_READERS_S = 3.0  # a closing worker waits this long for its readers to stop (the pool waits 5 s for it)


def pull_stream(source: str, meta: DeployMeta, options: dict[str, Any], chunk: int, realtime: bool, retries: int,
                backoff_s: float, stop: threading.Event, *, running: Callable[[float, bool], None],
                retrying: Callable[[int, float, str], None], put_chunk: Callable[[torch.Tensor, float, float], bool],
                end: Callable[[int | None, str | None], None], reconnect: bool = False,
                reconnected: Callable[[int], None] = lambda n: None) -> None:
    """Read one pull stream until it ends, fails or ``stop`` is set.

    Callbacks: ``running(fps, live)`` once open; ``retrying(attempt, delay_s, error)`` before each retry;
    ``put_chunk(frames, due, media_s)`` for each chunk of ``chunk`` sampled frames (fewer at the end),
    returning False when the stream was stopped meanwhile; ``end(num_frames, error)`` once, unless the
    stream was stopped (its consumer then ends it itself).

    ``reconnect``: a live source (URL, device) that ends or fails after it was open is opened again, with
    the same ``retries`` and backoff as the first opening (``retrying`` before each attempt, the error
    saying why the connection was lost), and the stream goes on: ``reconnected(n)`` after the ``n``-th
    reconnection, then its chunks as before (their media times go on from where the lost connection
    stopped). The frames of a chunk being read when the connection failed are lost with it. A file ends at
    its end or at its first error, reconnect or not: opening it again would replay it.
    """
    # one intra-op thread for this thread's resizing: with torch's default, each of many readers would run
    # its own OpenMP team of one thread per core on the same cores
    torch.set_num_threads(1)
    shim = SimpleNamespace(meta=meta)  # open_source reads the model's sample rate and input size from .meta

    def reopen(error: str | None) -> tuple[Any, str | None]:
        """(the opened source, None), or (None, the last error) after ``retries`` retries or a stop;
        ``error``: why the stream must be opened again (None: the first opening, tried at once)."""
        attempt = 0
        while True:
            if error is not None:
                if attempt == retries or stop.is_set():
                    return None, error
                delay = min(backoff_s * 2 ** attempt, MAX_BACKOFF_S)
                retrying(attempt + 1, delay, error)
                if stop.wait(delay):
                    return None, error
                attempt += 1
            try:
                return open_source(source, shim, **options), None
            except (ValueError, OSError) as e:  # DataError is a ValueError
                error = str(e)

    covered = 0  # original frames the chunks of earlier connections covered
    media_offset = 0.0  # their media time
    connections = 0
    lost: str | None = None
    while True:
        src, error = reopen(lost)
        if src is None:
            if lost is None:
                end(None, error)
            else:
                end(covered, f"connection lost: {lost}" + ("" if error == lost else f"; reopening failed: {error}"))
            return
        with src:
            if stop.is_set():  # removed while it was being opened
                return
            if connections == 0:
                running(src.fps or meta.fps, src.live)
            else:
                reconnected(connections)
            connections += 1
            again = reconnect and src.live
            sent = 0  # sampled frames delivered from this connection
            try:
                while not stop.is_set() and len(frames := src.read(chunk)) > 0:
                    now = time.perf_counter()
                    due = (src.first_frame_wall or now) + src.media_time_s
                    if realtime and due > now and stop.wait(due - now):
                        return
                    if not put_chunk(frames, due, media_offset + src.media_time_s):
                        return
                    sent += len(frames)
                if stop.is_set():
                    return
                if not again:
                    end(covered + (src.num_frames if src.num_frames is not None and src.ended else src.decoded),
                        None)
                    return
                lost = "the source ended"
            except (ValueError, OSError) as e:
                if not again:
                    end(covered + src.decoded, str(e))
                    return
                lost = str(e)
            covered += sent * meta.sample_rate
            media_offset += src.media_time_s


# ---- decode worker processes ----

def _on_own_thread(call: Callable[[], Any]) -> Any:
    """``call()`` on a throwaway thread. For CUDA runtime calls made outside PyTorch's checks: a failed one
    leaves its error as its thread's last CUDA error, which PyTorch's check after the next kernel launched
    on that thread (``cudaGetLastError``) would report as that kernel's own failure."""
    out: list[Any] = []

    def run() -> None:
        with contextlib.suppress(Exception):
            out.append(call())

    thread = threading.Thread(target=run, name="streamseg-cuda-host", daemon=True)
    thread.start()
    thread.join()
    return out[0] if out else None


def _on_device(device: torch.device | None, call: Callable[[], Any]) -> Callable[[], Any]:
    """``call`` made with ``device`` as the calling thread's current CUDA device: a new thread's current
    device is device 0, and a runtime call there would create device 0's context (hundreds of MB of its
    memory) for a server whose model runs on another GPU."""
    def run() -> Any:
        if device is not None and device.index is not None:
            torch.cuda.set_device(device)
        return call()
    return run


def host_register(tensor: torch.Tensor, device: torch.device | None = None) -> bool:
    """Page-lock a contiguous CPU tensor's memory in place for every CUDA context (``cudaHostRegister``,
    flag ``cudaHostRegisterPortable``), calling from ``device``'s context (default: the current device);
    False if it could not be (no error is left behind, see `_on_own_thread`). Undo with `host_unregister`
    before the memory is freed."""
    nbytes = tensor.numel() * tensor.element_size()
    register = _on_device(device, lambda: int(torch.cuda.cudart().cudaHostRegister(tensor.data_ptr(), nbytes, 1)))
    return _on_own_thread(register) == 0


def host_unregister(tensor: torch.Tensor, device: torch.device | None = None) -> None:
    _on_own_thread(_on_device(device, lambda: torch.cuda.cudart().cudaHostUnregister(tensor.data_ptr())))


def ring_buffers(slots: int, chunk: int, size: tuple[int, int]) -> torch.Tensor:
    """``slots`` chunk buffers ``(slots, chunk, H, W, 3)`` uint8 in new shared memory (what a `ChunkRing`
    wraps). Made straight in shared memory: ``torch.empty(...).share_memory_()`` would also copy the whole
    (unwritten) tensor into it. PyTorch reserves the file's pages when it makes it (``posix_fallocate``), so
    a full ``/dev/shm`` fails here, with "No space left on device", and not later in a write."""
    shape = (slots, chunk, *size, 3)
    storage = torch.UntypedStorage._new_shared(slots * chunk * size[0] * size[1] * 3)
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape)


class ChunkRing:
    """The pool's side of one worker stream's chunk buffers: ``frames`` (`ring_buffers`, made by the worker,
    channels-last ``(slots, chunk, H, W, 3)``), with ``pin`` (the GPU) also page-locked for asynchronous uploads to the
    GPU (see the module docstring). Why channels-last: a reader's frames are channels-last in memory
    (swscale's packed RGB, kept by the resize), so a worker's copy into its buffer is a plain copy, where a
    channels-first buffer made it a byte-wise transposition on the worker's one core; the GPU steps upload
    the buffer as it is and transpose on the device (`FixedBatchStep`, `TorchStreamer.step_frames`)."""

    def __init__(self, frames: torch.Tensor, pin: torch.device | None = None) -> None:
        self.frames, self._device = frames, pin
        # pages that cannot be locked: the chunks are then copied as from any host tensor
        self.pinned = pin is not None and host_register(self.frames, pin)

    def view(self, index: int, length: int) -> torch.Tensor:
        """Buffer ``index``'s first ``length`` frames as ``(length, 3, H, W)`` (a channels-last view)."""
        return self.frames[index, :length].permute(0, 3, 1, 2)

    def close(self) -> None:
        """Unlock the pages (before the memory goes); the views must not be uploaded from afterwards."""
        if self.pinned:
            self.pinned = False
            host_unregister(self.frames, self._device)


def _worker_main(meta: DeployMeta, options: dict[str, Any], chunk: int, retries: int, backoff_s: float,
                 commands: Any, results: Any) -> None:
    """A decode worker: one reader thread per stream it is given; commands ``("add", sid, source, realtime,
    reconnect, buffers, (H, W))`` (the worker makes the stream's ring of ``buffers`` chunk buffers, sends it
    as ``("ring", sid, tensor)`` before any chunk, and starts with as many credits), ``("credit", sid)``,
    ``("remove", sid)``, ``("close",)``."""
    torch.set_num_threads(1)
    streams: dict[str, tuple[threading.Event, threading.Semaphore]] = {}
    readers: list[threading.Thread] = []
    results.put(("ready", None))

    def read(sid: str, source: str, realtime: bool, reconnect: bool, stop: threading.Event,
             credits: threading.Semaphore, ring: torch.Tensor) -> None:
        sent = 0

        def put_chunk(frames: torch.Tensor, due: float, media_s: float) -> bool:
            nonlocal sent
            arrived = time.perf_counter()
            while not stop.is_set():
                if credits.acquire(timeout=0.05):
                    # a credit frees the oldest buffer: the pool reads the chunks in the order they are sent
                    index = sent % len(ring)
                    ring[index, :len(frames)].copy_(frames.permute(0, 2, 3, 1))  # (n, H, W, 3)
                    sent += 1
                    results.put(("chunk", sid, index, len(frames), arrived, due, media_s))
                    return True
            return False

        try:
            pull_stream(source, meta, options, chunk, realtime, retries, backoff_s, stop,
                        running=lambda fps, live: results.put(("running", sid, fps, live)),
                        retrying=lambda attempt, delay, error: results.put(("retrying", sid, attempt, delay, error)),
                        put_chunk=put_chunk, end=lambda num, error: results.put(("end", sid, num, error)),
                        reconnect=reconnect, reconnected=lambda n: results.put(("reconnected", sid, n)))
        except Exception as e:  # noqa: BLE001 (e.g. a chunk that does not fit its ring: the stream ends, named)
            results.put(("end", sid, None, f"reader failed: {type(e).__name__}: {e}"))

    parent = os.getppid()
    while True:
        try:
            cmd = commands.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the pool's process died without closing us: do not linger
                results.cancel_join_thread()  # nobody reads our queue any more: exit without flushing it
                cmd = ("close",)
            else:
                continue
        if cmd[0] == "add":
            _, sid, source, realtime, reconnect, buffers, size = cmd
            try:
                ring = ring_buffers(buffers, chunk, size)
            except RuntimeError as e:  # e.g. a container's small /dev/shm
                results.put(("end", sid, None, f"cannot make its {buffers} chunk buffers of {chunk} frames "
                                               f"{size[0]}x{size[1]} in shared memory (/dev/shm): {e}"))
                continue
            results.put(("ring", sid, ring))  # ahead of the stream's chunks, on the same queue
            stop, sem = threading.Event(), threading.Semaphore(buffers)
            streams[sid] = (stop, sem)
            readers[:] = [t for t in readers if t.is_alive()]
            readers.append(threading.Thread(target=read, args=(sid, source, realtime, reconnect, stop, sem, ring),
                                            name=f"streamseg-pull-{sid}", daemon=True))
            readers[-1].start()
        elif cmd[0] == "credit" and cmd[1] in streams:
            streams[cmd[1]][1].release()
        elif cmd[0] == "remove" and cmd[1] in streams:
            streams.pop(cmd[1])[0].set()
        elif cmd[0] == "close":
            for stop, _ in streams.values():
                stop.set()
            # the readers stop at their next chunk (or credit wait): let them, so that none is inside FFmpeg or
            # torch when the process exits (which aborts with "terminate called without an active exception")
            deadline = time.perf_counter() + CLOSE_READERS_S
            for t in readers:
                t.join(max(0.0, deadline - time.perf_counter()))
            results.put(("closed", None))
            return


class _Worker:
    def __init__(self, ctx: Any, index: int, args: tuple) -> None:
        self.index = index
        self.commands, self.results = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=_worker_main, args=(*args, self.commands, self.results),
                                   name=f"streamseg-decode-{index}", daemon=True)
        self.process.start()
        self.streams: set[str] = set()
        self.closing = False
        self.ready = threading.Event()


class DecodeWorkers:
    """``workers`` decode processes reading pull streams for a pool (see the module docstring).

    ``deliver(sid, message)`` gets, on a receiver thread, the worker's messages for stream ``sid``:
    ``("running", fps, live)``, ``("retrying", attempt, delay_s, error)``, ``("reconnected", n)``,
    ``("chunk", frames, arrived, due, media_s)`` and ``("end", num_frames, error)``; a stream whose worker
    died gets ``("end", None, error)``. It must not block for long (the worker's other streams wait behind it). A chunk's
    ``frames`` are a view of the stream's ring: its buffer is rewritten after `credit`, so the consumer
    gives that credit only once it has read them. ``pin``: the GPU the consumer uploads the chunks to, whose
    context page-locks the rings (None: not locked).
    """

    def __init__(self, workers: int, meta: DeployMeta, options: dict[str, Any], chunk: int, retries: int,
                 backoff_s: float, deliver: Callable[[str, tuple], None], pin: torch.device | None = None) -> None:
        if workers < 1:
            raise ValueError(f"decode_workers must be >= 1 for worker processes, got {workers}")
        # spawn: a forked child of a process that has started CUDA or torch's thread pools can deadlock
        self._ctx = torch.multiprocessing.get_context("spawn")
        self._args = (meta, dict(options), chunk, retries, backoff_s)
        self._size, self._pin = tuple(meta.sample_shape[1:]), pin
        self._rings: dict[str, ChunkRing] = {}  # until remove(): a dead worker's streams keep theirs
        self._deliver = deliver
        self._lock = threading.Lock()
        self._owner: dict[str, _Worker] = {}
        self._next = workers
        self._closed = False
        self._workers = [self._start(i) for i in range(workers)]
        deadline = time.perf_counter() + START_TIMEOUT_S  # started (imports done) before the first stream
        for w in self._workers:
            while not w.ready.wait(0.1):
                if not w.process.is_alive() or time.perf_counter() > deadline:
                    self.close()
                    raise RuntimeError(f"decode worker {w.index} did not start ("
                                       + (f"exit code {w.process.exitcode})" if w.process.exitcode is not None
                                          else f"not ready within {START_TIMEOUT_S:.0f} s)"))

    def _start(self, index: int) -> _Worker:
        worker = _Worker(self._ctx, index, self._args)
        threading.Thread(target=self._receive, args=(worker,), name=f"streamseg-decode-rx-{index}",
                         daemon=True).start()
        return worker

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    def add(self, sid: str, source: str, realtime: bool, buffers: int, reconnect: bool = False) -> int:
        """Give the stream to the worker owning the fewest, which makes its ring of ``buffers`` chunk buffers
        (as many credits); returns that worker's process id."""
        with self._lock:
            alive = [w for w in self._workers if w.process.is_alive()]
            if not alive:
                raise RuntimeError("no decode worker is running (they exited; see the streams' errors)")
            worker = min(alive, key=lambda w: len(w.streams))
            worker.streams.add(sid)
            self._owner[sid] = worker
        worker.commands.put(("add", sid, source, realtime, reconnect, buffers, self._size))
        return worker.process.pid

    def credit(self, sid: str) -> None:
        """One chunk of ``sid`` was taken from its buffer: its reader may send one more."""
        worker = self._owner.get(sid)
        if worker is not None:
            worker.commands.put(("credit", sid))

    def remove(self, sid: str) -> None:
        """Stop the stream's reader (if still running) and forget the stream; its chunks already delivered
        must not be read any more (its ring is unlocked)."""
        with self._lock:
            worker = self._owner.pop(sid, None)
            if worker is not None:
                worker.streams.discard(sid)
            ring = self._rings.pop(sid, None)
        if ring is not None:
            ring.close()
        if worker is not None and worker.process.is_alive():
            worker.commands.put(("remove", sid))

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            self._closed = True  # no replacement starts from now on
            workers = list(self._workers)
        for w in workers:
            w.closing = True
            if w.process.is_alive():
                w.commands.put(("close",))
        deadline = time.perf_counter() + timeout_s
        for w in workers:
            w.process.join(max(0.0, deadline - time.perf_counter()))
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(1.0)
        with self._lock:
            rings, self._rings = list(self._rings.values()), {}
        for ring in rings:
            ring.close()

    def _receive(self, worker: _Worker) -> None:
        while True:
            try:
                msg = worker.results.get(timeout=0.5)
            except queue.Empty:
                if worker.process.is_alive():
                    continue
                self._died(worker)
                return
            except (EOFError, OSError):  # the worker's end of the queue is gone
                self._died(worker)
                return
            except Exception:  # noqa: BLE001 (a message that cannot be rebuilt: the worker's next ones may)
                continue
            if msg[0] == "closed":
                return
            if msg[0] == "ready":
                worker.ready.set()
                continue
            if msg[0] == "ring":  # ("ring", sid, tensor): page-locked here, on this worker's receiver thread
                self._keep_ring(msg[1], ChunkRing(msg[2], self._pin))
                continue
            if msg[1] in self._owner:
                try:
                    if msg[0] == "chunk":  # ("chunk", sid, index, length, ...): a view of its ring buffer
                        ring = self._rings.get(msg[1])
                        if ring is None:
                            continue
                        msg = ("chunk", msg[1], ring.view(msg[2], msg[3]), *msg[4:])
                    self._deliver(msg[1], (msg[0], *msg[2:]))
                except Exception as e:  # noqa: BLE001 (e.g. a full GPU while staging: that stream ends, named)
                    with contextlib.suppress(Exception):
                        self._deliver(msg[1], ("end", None, f"receiving its chunk failed: {type(e).__name__}: {e}"))

    def _keep_ring(self, sid: str, ring: ChunkRing) -> None:
        """A stream's ring from its worker: kept until `remove`, or closed at once if the stream was removed
        (or the pool closed) meanwhile."""
        with self._lock:
            keep = sid in self._owner and not self._closed
            if keep:
                self._rings[sid] = ring
        if not keep:
            ring.close()

    def _died(self, worker: _Worker) -> None:
        if worker.closing:
            return
        worker.process.join(1.0)  # a queue error can come just before the process is reaped
        if worker.process.is_alive():  # the queue failed, not the worker: it cannot be trusted any more
            worker.process.terminate()
            worker.process.join(1.0)
        code = worker.process.exitcode
        with self._lock:
            orphans = sorted(worker.streams)
            worker.streams.clear()
            for sid in orphans:
                self._owner.pop(sid, None)
            # new streams go to a fresh worker, unless closing, or unless this one never started (a
            # replacement would die the same way)
            if not self._closed and worker.ready.is_set():
                replacement = self._start(self._next)
                self._next += 1
                self._workers[self._workers.index(worker)] = replacement
        error = f"decode worker (pid {worker.process.pid}) exited with code {code}"
        for sid in orphans:
            self._deliver(sid, ("end", None, error))

