"""`StreamPool` without the web server: a failing model call ends only the streams of its batch, and an
event handler that raises never stops the engine."""

from __future__ import annotations

import http.server
import re
import threading
import time

from typing import Any

import numpy as np
import pytest
import torch

from streamseg.deploy import pull
from streamseg.deploy.batcher import StreamPool

from .test_infer import _Brightness, _ramp_video, tiny_meta


class _Poisoned(_Brightness):
    """Raises on a chunk holding a pure white frame (normalised mean > 2)."""

    def step(self, x: np.ndarray, state: list):
        if (x.mean(axis=(1, 3, 4)) > 2).any():
            raise RuntimeError("poisoned chunk")
        return super().step(x, state)


def _wait(pool: StreamPool, sid: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while (info := pool.info(sid))["status"] in ("starting", "running"):
        assert time.monotonic() < deadline, f"{sid} never finished"
        time.sleep(0.01)
    return info


def test_a_failing_step_and_a_raising_handler_stop_only_their_streams() -> None:
    calls = []

    def on_event(sid: str, event: dict) -> None:
        calls.append(event)
        if len(calls) % 2:
            raise RuntimeError("a broken subscriber")

    pool = StreamPool(_Poisoned(tiny_meta(sample_rate=1)), chunk=4, on_event=on_event)
    try:
        ramp = torch.linspace(0, 200, 12).to(torch.uint8)[:, None, None, None].expand(12, 3, 16, 16).contiguous()
        bad = pool.add(None, name="bad")
        pool.push(bad, torch.full((3, 3, 16, 16), 255, dtype=torch.uint8))  # less than a chunk: held ...
        pool.end(bad)  # ... until the end sends it (the stream may fail as soon as its chunk is queued)
        failed = _wait(pool, bad)
        assert failed["status"] == "error" and "poisoned chunk" in failed["error"]
        good = pool.add(None, name="good")
        pool.push(good, ramp)
        pool.end(good, num_frames=12)
        assert _wait(pool, good)["status"] == "ended" and pool.alive
        np.testing.assert_array_equal(pool.labels(good), [e["label_id"] for e in pool.events(good)
                                                          for _ in range(e["end"] - e["start"])])
        assert len(set(pool.labels(good).tolist())) > 1
        assert pool.failed_steps == 1 and pool.event_errors == (len(calls) + 1) // 2
    finally:
        pool.close()


class _Slow(_Brightness):
    """Takes at least 20 ms per model call."""

    def step(self, x: np.ndarray, state: list):
        time.sleep(0.02)
        return super().step(x, state)


def test_each_step_reports_its_model_time_and_every_chunk_latency() -> None:
    timings = []
    pool = StreamPool(_Slow(tiny_meta(sample_rate=1)), chunk=4, on_step=timings.append)
    try:
        frames = torch.zeros(10, 3, 16, 16, dtype=torch.uint8)
        ids = [pool.add(None, name=f"p{i}") for i in range(3)]
        for sid in ids:
            pool.push(sid, frames)  # 2 full chunks + 2 frames each
            pool.end(sid, num_frames=10)
        infos = [_wait(pool, sid) for sid in ids]
    finally:
        pool.close()
    assert len(timings) == pool.steps and sum(t.batch for t in timings) == sum(i["chunks"] for i in infos) == 9
    for t in timings:
        assert len(t.latencies_s) == t.batch and t.model_s >= 0.02 and t.seconds >= t.model_s
        assert min(t.latencies_s) >= t.model_s  # a chunk waits at least for the model call it is in


class _Staging(_Brightness):
    """A streamer with PyTorch's chunk interface (`stage_frames`, `step_frames`) recording, for each call,
    its thread and that thread's torch intra-op threads."""

    def __init__(self, meta) -> None:
        super().__init__(meta)
        self.staged: list[tuple[str, int]] = []
        self.stepped: list[tuple[str, int]] = []

    def stage_frames(self, frames: torch.Tensor) -> torch.Tensor:
        self.staged.append((threading.current_thread().name, torch.get_num_threads()))
        return frames.clone()

    def step_frames(self, frames: list[torch.Tensor], state: list):
        self.stepped.append((threading.current_thread().name, torch.get_num_threads()))
        return self.step(np.concatenate([self.meta.preprocess(f) for f in frames]), state)


def test_readers_stage_their_chunks_on_one_thread_each_and_the_engine_keeps_its_threads(tmp_path, monkeypatch) -> None:
    """Each pull stream's reader decodes with one FFmpeg thread, resizes with one torch thread and moves its
    chunks to the model's device itself; the engine keeps the torch threads of the pool's creator (a
    reader's setting would otherwise become the default of the engine thread)."""
    opened = []

    def open_source(source, streamer, **options):
        opened.append(options.get("decode_threads"))
        return real_open(source, streamer, **options)

    real_open = pull.open_source
    monkeypatch.setattr(pull, "open_source", open_source)
    videos = [_ramp_video(tmp_path / f"v{i}.mp4", frames=24) for i in range(2)]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        streamer = _Staging(tiny_meta(sample_rate=1))
        pool = StreamPool(streamer, chunk=8, stage_chunks=True)
        try:
            ids = [pool.add(str(v)) for v in videos]
            infos = [_wait(pool, sid) for sid in ids]
        finally:
            pool.close()
        assert torch.get_num_threads() == 2  # the caller's own setting is untouched
    finally:
        torch.set_num_threads(before)
    assert [i["status"] for i in infos] == ["ended", "ended"] and opened == [1, 1]
    assert len(streamer.staged) == 6 and {name for name, _ in streamer.staged} == {f"streamseg-pull-{s}" for s in ids}
    assert {threads for _, threads in streamer.staged} == {1}
    assert streamer.stepped and set(streamer.stepped) == {("streamseg-engine", 2)}


def _pulled(pool: StreamPool, videos: list, **add) -> list[tuple[dict, np.ndarray, list[dict]]]:
    ids = [pool.add(str(v), **add) for v in videos]
    return [(_wait(pool, sid), pool.labels(sid), pool.events(sid)) for sid in ids]


def _pulled_by_threads(meta, videos: list, chunk: int) -> list[tuple[dict, np.ndarray, list[dict]]]:
    """The reference: `_pulled` through a pool whose reader threads run in this process."""
    threads = StreamPool(_Brightness(meta), chunk=chunk)
    try:
        return _pulled(threads, videos)
    finally:
        threads.close()


def _same_events(a: list[dict], b: list[dict]) -> bool:
    strip = lambda events: [{k: v for k, v in e.items() if k != "latency_s"} for e in events]  # noqa: E731
    return strip(a) == strip(b)


def test_decode_workers_give_the_labels_and_events_of_reader_threads(tmp_path) -> None:
    """Pull streams read by decode worker processes label exactly as when read by threads of the pool's
    process; each stream says which worker read it, and the workers share the streams out."""
    videos = [_ramp_video(tmp_path / f"v{i}.mp4", frames=20 + 6 * i) for i in range(3)]
    meta = tiny_meta(sample_rate=1)
    want = _pulled_by_threads(meta, videos, chunk=8)
    workers = StreamPool(_Brightness(meta), chunk=8, decode_workers=2, buffer_chunks=1)
    try:
        pids = workers._decoders.pids
        got = _pulled(workers, videos)
    finally:
        workers.close()
    for (info_w, labels_w, events_w), (info_g, labels_g, events_g) in zip(want, got):
        assert info_w["worker"] is None and info_g["worker"] in pids
        assert info_g["status"] == "ended"
        assert info_g["frames"] == info_w["frames"] and info_g["chunks"] == info_w["chunks"]
        np.testing.assert_array_equal(labels_g, labels_w)
        assert len(events_g) > 1 and _same_events(events_g, events_w)
    assert {info["worker"] for info, _, _ in got} == set(pids)


class _LateReader(_Staging):
    """Reads a step's chunks only 50 ms after the call starts (a slow upload): a worker that rewrote a ring
    buffer during the step would change the labels."""

    def step_frames(self, frames: list[torch.Tensor], state: list):
        time.sleep(0.05)
        return super().step_frames(frames, state)


def test_a_ring_buffer_is_rewritten_only_after_the_step_that_read_it(tmp_path) -> None:
    """A worker stream's chunks travel in a ring of ``buffer_chunks + 1`` shared buffers; with two, each
    chunk's credit (the worker's right to rewrite it) comes back only once its step has read it, so the
    labels are those of reader threads even when the step reads its chunks late."""
    videos = [_ramp_video(tmp_path / f"v{i}.mp4", frames=40) for i in range(2)]
    meta = tiny_meta(sample_rate=1)
    want = _pulled_by_threads(meta, videos, chunk=4)
    workers = StreamPool(_LateReader(meta), chunk=4, decode_workers=1, buffer_chunks=1)
    try:
        got = _pulled(workers, videos)
        rings = workers._decoders._rings
    finally:
        workers.close()
    assert rings == {}  # each finished stream let go of its ring
    for (info_w, labels_w, _), (info_g, labels_g, _) in zip(want, got):
        assert info_g["status"] == "ended" and info_g["chunks"] == info_w["chunks"] == 10
        np.testing.assert_array_equal(labels_g, labels_w)


def test_a_decode_worker_retries_a_source_and_reports_it_gone(tmp_path) -> None:
    events = []
    pool = StreamPool(_Brightness(tiny_meta(sample_rate=1)), chunk=8, decode_workers=1, retries=1, backoff_s=0.05,
                      on_event=lambda sid, e: events.append(e))
    try:
        sid = pool.add(str(tmp_path / "gone.mp4"))
        info = _wait(pool, sid)
    finally:
        pool.close()
    assert info["status"] == "error" and "gone.mp4: video file not found" in info["error"] and info["retries"] == 1
    assert [e["status"] for e in events] == ["retrying", "error"]


def test_a_dead_decode_worker_ends_its_streams_and_is_replaced(tmp_path) -> None:
    """A worker killed mid-stream ends its stream with an error naming it; the pool and its other streams
    go on, and new streams go to a fresh worker."""
    import os
    import signal

    long = _ramp_video(tmp_path / "long.mp4", frames=90, fps=30)
    pool = StreamPool(_Brightness(tiny_meta(sample_rate=1)), chunk=8, decode_workers=1)
    try:
        sid = pool.add(str(long), realtime=True)  # 3 s of video at its own pace
        deadline = time.monotonic() + 30
        while pool.info(sid)["chunks"] < 1:
            assert time.monotonic() < deadline, "no chunk arrived"
            time.sleep(0.01)
        dead = pool.info(sid)["worker"]
        os.kill(dead, signal.SIGKILL)
        info = _wait(pool, sid)
        assert info["status"] == "error" and f"decode worker (pid {dead}) exited with code -9" in info["error"]
        assert 8 <= info["frames"] < 90 and pool.alive
        again = pool.add(str(_ramp_video(tmp_path / "short.mp4", frames=12)))
        done = _wait(pool, again)
        assert done["status"] == "ended" and done["frames"] == 12 and done["worker"] not in (None, dead)
    finally:
        pool.close()


def test_a_fixed_batch_step_labels_as_the_eager_pool_with_streams_joining_and_leaving(synth_video_root) -> None:
    """Each stream in its own row of one fixed-batch step (idle rows' states untouched, short last chunks
    masked) gives the labels and events of the eager pool, while streams start and end at other times."""
    from .test_infer import varying_streamer

    videos = sorted((synth_video_root / "Videos").glob("*.mp4"))[:3]
    streamer = varying_streamer(videos[0])
    results = []
    for fixed in (False, True):
        pool = StreamPool(streamer, chunk=6, max_streams=4, fixed_batch=fixed)
        try:
            first = pool.add(str(videos[0]), name="first")
            _wait(pool, first)  # its row is given back, and taken again by a later stream
            late = [pool.add(str(v), name=f"v{i}") for i, v in enumerate(videos)]
            got = [(pool.labels(s), pool.events(s)) for s in [first, *late] if _wait(pool, s)]
            results.append((got, pool._fixed))
        finally:
            pool.close()
    (want, _), (got, fixed_step) = results
    assert fixed_step is not None and sorted(fixed_step._free) == [0, 1, 2, 3]
    for (labels_w, events_w), (labels_g, events_g) in zip(want, got):
        np.testing.assert_array_equal(labels_g, labels_w)
        assert len(events_g) > 1 and len(events_g) == len(events_w)
        for g, w in zip(events_g, events_w):  # the same segments; confidences up to float rounding
            assert g["confidence"] == pytest.approx(w["confidence"], abs=1e-4)
            assert _same_events([{**g, "confidence": 0}], [{**w, "confidence": 0}])


def test_a_fixed_batch_step_needs_a_pytorch_model() -> None:
    with pytest.raises(ValueError, match="fixed_batch needs a PyTorch model"):
        StreamPool(_Brightness(tiny_meta(sample_rate=1)), chunk=4, fixed_batch=True)


def test_fixed_batch_rows_without_a_chunk_keep_their_state() -> None:
    from streamseg.deploy.fixed_step import FixedBatchStep
    from streamseg.deploy.runtime import TorchStreamer

    from .test_infer import SIZE, _net

    streamer = TorchStreamer(_net(torch.rand(1, 3, 12, *SIZE) * 2 - 1), tiny_meta())
    g = torch.Generator().manual_seed(0)
    c0, c1, d0, d1 = (torch.randint(0, 256, (4, 3, *SIZE), dtype=torch.uint8, generator=g) for _ in range(4))
    shared, alone = FixedBatchStep(streamer, rows=3, chunk=4), FixedBatchStep(streamer, rows=3, chunk=4)
    a, b, r = shared.take_row(), shared.take_row(), alone.take_row()
    first = shared.run([a, b], [c0, d0])[0]
    shared.run([b], [d1])  # a has no chunk this step: its state must not move
    second = shared.run([a], [c1[:3]])[0]  # a short last chunk, masked
    np.testing.assert_allclose(first, alone.run([r], [c0])[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(second, alone.run([r], [c1[:3]])[0], rtol=1e-5, atol=1e-5)
    assert second.shape == (streamer.meta.num_classes, 3)


@pytest.fixture
def no_tf32():
    """fp32 convolutions on the GPU: with cuDNN's default TF32, two batch shapes' kernels alone differ by
    0.02-0.03 in the logits below (measured on an H200, eager against eager too); in fp32 by 2.6e-5."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


@pytest.mark.gpu
def test_the_captured_fixed_batch_step_matches_the_eager_streamer_on_a_gpu(no_tf32) -> None:
    """On a GPU the fixed-batch step is compiled and captured in a CUDA graph: its logits for a stream that
    is idle for one step follow the eager `TorchStreamer` step of that stream alone."""
    from streamseg.deploy.fixed_step import FixedBatchStep
    from streamseg.deploy.runtime import TorchStreamer

    from .test_infer import SIZE, _net

    streamer = TorchStreamer(_net(torch.rand(1, 3, 12, *SIZE) * 2 - 1), tiny_meta(), device="cuda")
    fixed = FixedBatchStep(streamer, rows=4, chunk=4)
    fixed.warm_up()
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randint(0, 256, (4, 3, *SIZE), dtype=torch.uint8, generator=g) for _ in range(4)]
    a, b = fixed.take_row(), fixed.take_row()
    got_a = [fixed.run([a, b], chunks[:2])[0], fixed.run([b], chunks[2:3])[0], fixed.run([a], chunks[3:])[0]]
    state = streamer.init_state(1)
    want_a = []
    for c in (chunks[0], chunks[3]):
        logits, state = streamer.step_frames([c], state)
        want_a.append(logits[0])
    np.testing.assert_allclose(got_a[0], want_a[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_a[2], want_a[1], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_decode_workers_page_lock_their_rings_for_a_gpu_step(synth_video_root, no_tf32, monkeypatch) -> None:
    """With a PyTorch model on a GPU the workers' ring buffers are page-locked and the eager and the
    fixed-batch steps upload from them directly; the labels are the eager pool's with reader threads."""
    from streamseg.deploy.runtime import TorchStreamer

    from .test_infer import varying_streamer

    videos = sorted((synth_video_root / "Videos").glob("*.mp4"))[:2]
    cpu = varying_streamer(videos[0])
    streamer = TorchStreamer(cpu.net, cpu.meta, device="cuda")
    pinned: list[bool] = []
    keep = pull.DecodeWorkers._keep_ring

    def kept(self, sid, ring):  # each ring as the pool receives it from its worker
        pinned.append(ring.pinned and ring.view(0, 1).is_pinned())
        keep(self, sid, ring)

    monkeypatch.setattr(pull.DecodeWorkers, "_keep_ring", kept)
    results = []
    for workers, fixed in ((0, False), (1, False), (1, True)):
        pool = StreamPool(streamer, chunk=6, max_streams=2, fixed_batch=fixed, decode_workers=workers)
        try:
            ids = [pool.add(str(v)) for v in videos]
            results.append([(_wait(pool, s), pool.labels(s)) for s in ids])
        finally:
            pool.close()
    assert pinned == [True] * 4
    want = results[0]
    for got in results[1:]:
        for (info_w, labels_w), (info_g, labels_g) in zip(want, got):
            assert info_g["status"] == "ended" and info_g["worker"] is not None
            np.testing.assert_array_equal(labels_g, labels_w)


def test_a_ring_is_page_locked_from_its_gpus_context_on_a_thread_of_its_own(monkeypatch) -> None:
    """Page-locking runs on a throwaway thread whose current CUDA device would be device 0; for a model on
    another GPU it first makes that GPU current, so no context is created on device 0 (CUDA stand-ins:
    this records which device each runtime call was made from, and on which thread)."""
    calls: list[tuple[str, Any, bool]] = []
    current = threading.local()  # per thread, as CUDA's current device

    class Cudart:
        def cudaHostRegister(self, ptr, nbytes, flags):
            calls.append(("register", getattr(current, "device", 0), threading.current_thread() is main))
            return 0

        def cudaHostUnregister(self, ptr):
            calls.append(("unregister", getattr(current, "device", 0), threading.current_thread() is main))
            return 0

    main = threading.current_thread()
    monkeypatch.setattr(torch.cuda, "cudart", Cudart)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: setattr(current, "device", d))
    ring = pull.ChunkRing(pull.ring_buffers(2, 4, (8, 8)), torch.device("cuda", 1))
    assert ring.pinned
    ring.close()
    pull.host_register(ring.frames)  # no device given: the current one, untouched
    assert calls == [("register", torch.device("cuda", 1), False), ("unregister", torch.device("cuda", 1), False),
                     ("register", 0, False)]


@pytest.mark.gpu
def test_a_ring_that_cannot_be_page_locked_leaves_no_cuda_error_behind() -> None:
    """A failed ``cudaHostRegister`` sets its thread's last CUDA error, which PyTorch's check after the
    next kernel launched on that thread reports as that kernel's failure; `host_register` fails cleanly."""
    torch.ones(4, device="cuda").mul_(2)  # CUDA started
    memory = torch.empty(1 << 20, dtype=torch.uint8)
    cudart = torch.cuda.cudart()
    assert int(cudart.cudaHostRegister(memory.data_ptr(), memory.numel(), 1)) == 0
    try:
        # the hazard, on this thread: registering the same pages again fails and poisons the next launch
        assert int(cudart.cudaHostRegister(memory.data_ptr(), memory.numel(), 1)) != 0
        with pytest.raises(RuntimeError):
            torch.ones(4, device="cuda").mul_(2)
        assert not pull.host_register(memory)  # already locked: refused, on its own thread
        assert torch.ones(4, device="cuda").mul_(2).sum().item() == 8
    finally:
        cudart.cudaHostUnregister(memory.data_ptr())


def test_decode_workers_exit_when_their_pool_process_is_killed(tmp_path) -> None:
    """A server killed outright (SIGKILL: no close) leaves no decode worker behind."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "pool.py"
    script.write_text(
        "import sys, time\n"
        "from streamseg.deploy.batcher import StreamPool\n"
        "from streamseg.deploy.runtime import DeployMeta\n"
        "class Model:\n"
        "    def __init__(self, meta): self.meta = meta\n"
        "    def init_state(self, batch): return []\n"
        "meta = DeployMeta(class_names=['a', 'b'], fps=15.0, sample_rate=1, input_kind='frames', sample_shape=[3, 8, 8],\n"
        "                  lookahead=0, state_shapes=[], mean=[0.5] * 3, std=[0.5] * 3)\n"
        "if __name__ == '__main__':  # the workers are spawned: they import this file\n"
        "    pool = StreamPool(Model(meta), chunk=4, decode_workers=1)\n"
        "    print(pool._decoders.pids[0], flush=True)\n"
        "    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def alive(pid: int) -> bool:  # a zombie (exited, not yet reaped by its new parent) counts as gone
        stat = Path(f"/proc/{pid}/stat")
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 15
    while alive(worker):
        assert time.monotonic() < deadline, f"decode worker {worker} outlived its killed pool process"
        time.sleep(0.1)


class _FailingStage(_Staging):
    def stage_frames(self, frames: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory (stand-in)")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_chunk_that_cannot_be_staged_ends_its_stream_with_the_reason(tmp_path, workers) -> None:
    """A reader thread (or a worker's receiver thread) that fails to stage a chunk ends that stream with
    the error instead of dying silently and leaving it running forever."""
    pool = StreamPool(_FailingStage(tiny_meta(sample_rate=1)), chunk=8, stage_chunks=True, decode_workers=workers)
    try:
        info = _wait(pool, pool.add(str(_ramp_video(tmp_path / "v.mp4", frames=16))), timeout_s=20)
    finally:
        pool.close()
    assert info["status"] == "error" and "RuntimeError: CUDA out of memory (stand-in)" in info["error"]


def test_a_removed_stream_releases_its_queued_chunks_and_its_worker(tmp_path) -> None:
    """Streams removed while their buffers are full (the model slower than decoding) keep no chunk in the
    finished slot kept for status, and leave nothing in the decode workers' books."""
    pool = StreamPool(_Slow(tiny_meta(sample_rate=1)), chunk=4, decode_workers=1, buffer_chunks=3)
    try:
        ids = [pool.add(str(_ramp_video(tmp_path / f"v{i}.mp4", frames=120))) for i in range(2)]
        deadline = time.monotonic() + 30
        while min(pool.info(s)["queued_chunks"] for s in ids) < 2:  # the third is in a step, not yet credited
            assert time.monotonic() < deadline, "buffers never filled"
            time.sleep(0.01)
        for sid in ids:
            pool.remove(sid)
        infos = [_wait(pool, sid) for sid in ids]
        assert [i["status"] for i in infos] == ["removed", "removed"] and [i["queued_chunks"] for i in infos] == [0, 0]
        assert pool._decoders._owner == {} and all(not w.streams for w in pool._decoders._workers)
    finally:
        pool.close()


def test_a_stream_whose_chunk_buffers_cannot_be_made_ends_with_the_reason(tmp_path) -> None:
    """No room for a worker stream's ring in shared memory (here: buffers of 100000x100000 frames, more
    than any /dev/shm): the stream ends with status ``error`` naming the buffers and the reason, its fixed
    row and worker are given back, and the pool serves the next stream."""
    pool = StreamPool(_Brightness(tiny_meta(sample_rate=1)), chunk=4, decode_workers=1, max_streams=1)
    try:
        video = str(_ramp_video(tmp_path / "v.mp4", frames=12))
        pool._decoders._size = (100_000, 100_000)
        info = _wait(pool, pool.add(video, name="v"))
        assert info["status"] == "error" and re.fullmatch(
            r"cannot make its 5 chunk buffers of 4 frames 100000x100000 in shared memory \(/dev/shm\): .*No space "
            r"left on device.*", info["error"]), info["error"]
        assert pool._decoders._owner == {} and pool._decoders._rings == {}
        pool._decoders._size = (16, 16)
        assert _wait(pool, pool.add(video, name="w"))["status"] == "ended"
    finally:
        pool.close()


def test_adding_a_worker_stream_makes_no_ring_in_the_pools_process(tmp_path, monkeypatch) -> None:
    """A worker stream's ring (hundreds of MB at HD input sizes) is made by its worker, not by `add` in the
    pool's process (where it held the GIL, and with 64 streams added one by one delayed the last by a
    second): `add` returns without making shared memory here, and the ring the worker sends is kept
    (page-locked here on a GPU) until the stream ends, then closed."""
    made: list[tuple] = []  # shared memory made in this process
    closed: list[pull.ChunkRing] = []
    new_shared = torch.UntypedStorage._new_shared
    monkeypatch.setattr(torch.UntypedStorage, "_new_shared",
                        classmethod(lambda cls, *a, **k: (made.append(a), new_shared(*a, **k))[1]))
    share = torch.Tensor.share_memory_
    monkeypatch.setattr(torch.Tensor, "share_memory_", lambda self: (made.append(self.shape), share(self))[1])
    close = pull.ChunkRing.close
    monkeypatch.setattr(pull.ChunkRing, "close", lambda self: (closed.append(self), close(self)))
    pool = StreamPool(_Brightness(tiny_meta(sample_rate=1)), chunk=4, decode_workers=1, max_streams=2)
    try:
        video = str(_ramp_video(tmp_path / "v.mp4", frames=12))
        sid = pool.add(video, name="a")
        assert made == []
        assert _wait(pool, sid)["frames"] == 12
        assert len(closed) == 1 and closed[0].frames.shape == (4 + 1, 4, 16, 16, 3)  # buffer_chunks + one in a step
        assert pool._decoders._rings == {}
    finally:
        pool.close()


class _FlakyCamera(http.server.BaseHTTPRequestHandler):
    """A live MPEG-TS stream over HTTP that drops its first connection half-way (the full length announced,
    half the bytes sent), serves the whole stream on the second, and is gone (404) after that."""

    data = b""
    requests = 0

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        type(self).requests += 1
        if type(self).requests > 2:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data if type(self).requests == 2 else self.data[: len(self.data) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.mark.parametrize("workers", [0, 1])
def test_a_reconnecting_stream_goes_on_after_its_camera_drops(tmp_path, workers) -> None:
    """``reconnect``: a live source whose connection is lost is opened again and the same stream goes on
    (frames counting on, a ``running`` event with ``reconnected``); when it cannot be opened again within
    the retries, the stream ends with ``error`` naming the loss and the failed reopening. A file cannot
    be added with ``reconnect``."""
    from .test_sources import remux_to_mpegts

    meta = tiny_meta(sample_rate=1)
    video = _ramp_video(tmp_path / "ramp.mp4", frames=48)
    handler = type("Camera", (_FlakyCamera,), {"data": remux_to_mpegts(video, tmp_path / "cam.ts").read_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    events: list[dict] = []
    pool = StreamPool(_Brightness(meta), chunk=4, decode_workers=workers, retries=1, backoff_s=0.05,
                      on_event=lambda sid, e: events.append(e))
    try:
        with pytest.raises(ValueError, match="reconnect needs a live source .* not the file"):
            pool.add(str(video), reconnect=True)
        sid = pool.add(f"http://127.0.0.1:{server.server_address[1]}/cam.ts", name="cam", reconnect=True)
        info = _wait(pool, sid)
        labels = pool.labels(sid)
        whole = _wait(pool, pool.add(str(video), name="file"))
        want = pool.labels("file")
    finally:
        pool.close()
        server.shutdown()
        server.server_close()
    assert whole["frames"] == 48 and handler.requests == 3
    first = len(labels) - 48  # the frames of the dropped connection's chunks, then the whole stream
    assert 0 < first < 48 and info["frames"] == len(labels) and info["reconnects"] == 1
    assert info["status"] == "error" and info["error"].startswith("connection lost: the source ended; reopening "
                                                                  "failed:") and "404" in info["error"]
    np.testing.assert_array_equal(labels[first:], want)  # (the stand-in model keeps no state)
    np.testing.assert_array_equal(labels[:first], want[:first])
    status = [e for e in events if e.get("stream") == "cam" and "label" not in e]
    assert [e["status"] for e in status] == ["running", "retrying", "running", "retrying", "error"]
    assert status[1]["error"] == "the source ended" and status[2]["reconnected"] == 1


def test_a_ring_holds_the_readers_frames_in_their_own_channels_last_layout(tmp_path) -> None:
    """A reader's frames are channels-last in memory (packed RGB, kept by the resize), and so are a ring's
    buffers: a worker's copy into its buffer is a plain copy (no transposition on its one core), and the
    buffer reads back as the frames."""
    from streamseg.deploy.sources import StreamSource

    with StreamSource(str(_ramp_video(tmp_path / "v.mp4", frames=12)), 1, (24, 20)) as src:
        frames = src.read(6)
    assert frames.shape == (6, 3, 24, 20) and frames.permute(0, 2, 3, 1).is_contiguous()
    ring = pull.ChunkRing(pull.ring_buffers(2, 8, (24, 20)))
    ring.frames[1, :6].copy_(frames.permute(0, 2, 3, 1))  # as the worker does
    view = ring.view(1, 6)
    assert view.permute(0, 2, 3, 1).is_contiguous() and torch.equal(view, frames)


def test_a_worker_reader_that_raises_ends_its_stream_with_the_reason(tmp_path) -> None:
    """A reader in a decode worker that fails outside decoding (here: frames of another size than the
    model's, which do not fit the stream's ring buffers) ends its stream with the error, instead of the
    stream waiting forever for chunks that never come."""
    meta = tiny_meta(sample_rate=1)
    pool = StreamPool(_Brightness(meta), chunk=4, decode_workers=1)
    try:
        pool._decoders._size = (8, 8)  # the rings are made smaller than the frames the reader gives
        info = _wait(pool, pool.add(str(_ramp_video(tmp_path / "v.mp4", frames=12))))
    finally:
        pool.close()
    assert info["status"] == "error" and info["error"].startswith("reader failed: RuntimeError")


def test_a_pool_closed_mid_stream_lets_its_workers_readers_stop_before_they_exit(tmp_path, capfd) -> None:
    """Closing a pool whose workers are still decoding: each worker waits for its reader threads to stop
    before it exits, so that no reader is inside FFmpeg or torch when the process ends (which aborted the
    worker with "terminate called without an active exception" on the server's stderr)."""
    meta = tiny_meta(sample_rate=1, sample_shape=[3, 224, 224])  # resizing to 224x224: time inside torch
    pool = StreamPool(_Brightness(meta), chunk=32, decode_workers=1, max_streams=8)
    try:
        video = str(_ramp_video(tmp_path / "v.mp4", frames=3000))
        ids = [pool.add(video, name=f"s{i}") for i in range(8)]
        deadline = time.monotonic() + 30
        while sum(pool.info(s)["chunks"] for s in ids) < 8:  # all reading, buffers filling
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        pool.close()
    worker = pool._decoders._workers[0].process
    assert worker.exitcode == 0 and "terminate called" not in capfd.readouterr().err


def test_a_ring_that_arrives_after_its_stream_was_removed_is_closed_not_kept(tmp_path, monkeypatch) -> None:
    """A worker sends a stream's ring ahead of its chunks, but the stream may be removed (or the pool
    closed) before the ring is received: it is then closed at once (its pages unlocked), not kept."""
    closed: list[pull.ChunkRing] = []
    monkeypatch.setattr(pull.ChunkRing, "close", lambda self: closed.append(self))
    pool = StreamPool(_Brightness(tiny_meta(sample_rate=1)), chunk=4, decode_workers=1, max_streams=2)
    try:
        decoders = pool._decoders
        late = pull.ChunkRing(pull.ring_buffers(2, 4, (16, 16)))
        decoders._keep_ring("gone", late)  # no such stream (any more)
        assert closed == [late] and "gone" not in decoders._rings
        sid = pool.add(str(_ramp_video(tmp_path / "v.mp4", frames=12)), name="a")
        _wait(pool, sid)
        assert len(closed) == 2 and decoders._rings == {}  # its own ring: kept while it ran, closed at its end
    finally:
        pool.close()
    after = pull.ChunkRing(pull.ring_buffers(2, 4, (16, 16)))
    pool._decoders._owner["b"] = pool._decoders._workers[0]  # as if a stream were still owned
    pool._decoders._keep_ring("b", after)  # the pool is closed: not kept
    assert closed[-1] is after and pool._decoders._rings == {}
