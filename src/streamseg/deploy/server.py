"""`streamseg serve`: one model, many streams (continuous batching, `StreamPool`), over HTTP and WebSocket.

Endpoints (JSON unless said; *control* ones need ``Authorization: Bearer <token>`` when a token is set):

    GET    /health                      200 while the process answers
    GET    /ready                       200 when the model is loaded and the engine runs, else 503
    GET    /metrics                     Prometheus text format
    GET    /model                       the model's DeployMeta (class names, input size, sample rate, ...)
    GET    /streams                     every stream's status (active, then recently finished)
    POST   /streams          control    {"source": URL|path|device|null, "name", "realtime", "fps",
                                         "reconnect"} -> 201 {"id"}
    GET    /streams/{id}                one stream's status (frames, chunks, lag_s, late_chunks, error, ...)
    DELETE /streams/{id}     control    stop it (its open segment is closed and emitted)
    GET    /streams/{id}/events         its segment events so far
    WS     /streams/{id}/frames control push: binary messages of uint8 (n, 3, H, W) sampled frames,
                                        then the text {"end": true, "num_frames": N}
    GET    /events[?stream=id]          Server-Sent Events: ``event: segment`` / ``event: status``
    WS     /ws/events[?stream=id]       the same events, one JSON text message each
    GET    /                            the dashboard (streams, current labels, growing timelines)

Segment events are the JSON objects `streamseg infer` prints (``video`` = the stream id); status events
are ``{"stream", "status", ...}``. A subscriber that does not read fast enough (``subscriber_queue``
events behind) is dropped and counted (``streamseg_dropped_subscribers_total``); the engine never waits
for a subscriber or the webhook. Request bodies over ``max_body`` bytes get 413; pushed messages over
``max_push_bytes`` close the socket (code 1009).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import queue
import socket
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from .batcher import PoolFull, StepTiming, StreamPool, UnknownStream
from .dashboard import DASHBOARD_HTML
from .runtime import Streamer

__all__ = ["ServerOptions", "ServerThread", "build_app", "check_host", "uvicorn_config"]


@dataclass
class ServerOptions:
    """What `build_app` needs besides the streamer. ``token``: required on control endpoints (None: none
    required, allowed only on a loopback address, see `serve`). ``webhook``: a URL each event is POSTed to."""

    chunk: int | None = None
    max_streams: int = 64
    buffer_chunks: int = 4
    retries: int = 3
    backoff_s: float = 1.0
    token: str | None = None
    webhook: str | None = None
    subscriber_queue: int = 1000
    max_body: int = 64 * 1024
    max_push_bytes: int = 16 * 1024 * 1024
    source_options: dict[str, Any] | None = None
    decode_workers: int = 0
    stage_chunks: bool = False
    fixed_batch: bool = False


class AddStream(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str | None = None
    name: str | None = None
    realtime: bool = False
    fps: float | None = None
    reconnect: bool = False


class _Broker:
    """Fans events out to subscribers (bounded asyncio queues on the server's loop) from any thread."""

    def __init__(self, size: int, dropped: Counter) -> None:
        self.size, self.dropped = size, dropped
        self.loop: asyncio.AbstractEventLoop | None = None
        self.subs: set[tuple[str | None, asyncio.Queue]] = set()

    def publish(self, sid: str, event: dict[str, Any]) -> None:
        if self.loop is not None and self.subs:
            self.loop.call_soon_threadsafe(self._offer, sid, event)

    def _offer(self, sid: str, event: dict[str, Any]) -> None:
        for sub in list(self.subs):
            want, q = sub
            if want is not None and want != sid:
                continue
            if q.full():  # too slow: drop the subscriber, never wait for it
                self.subs.discard(sub)
                self.dropped.inc()
                q.get_nowait()
                q.put_nowait(None)
            else:
                q.put_nowait(event)

    def subscribe(self, sid: str | None) -> tuple[str | None, asyncio.Queue]:
        sub = (sid, asyncio.Queue(self.size))
        self.subs.add(sub)
        return sub

    def unsubscribe(self, sub: tuple[str | None, asyncio.Queue]) -> None:
        self.subs.discard(sub)


class _Webhook:
    """POSTs each event to a URL from a background thread; a full queue or a failed POST is counted."""

    def __init__(self, url: str, failures: Counter, size: int = 10_000) -> None:
        import httpx

        self.url, self.failures = url, failures
        self.queue: queue.Queue = queue.Queue(size)
        self.client = httpx.Client(timeout=5.0)
        threading.Thread(target=self._run, name="streamseg-webhook", daemon=True).start()

    def send(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.failures.inc()

    def _run(self) -> None:
        while (event := self.queue.get()) is not None:
            try:
                self.client.post(self.url, json=event).raise_for_status()
            except Exception:  # noqa: BLE001 (a webhook receiver's trouble must not stop the server)
                self.failures.inc()

    def close(self) -> None:
        self.queue.put(None)


class _StreamCollector:
    """Per-stream gauges and counters, read from the pool at scrape time."""

    def __init__(self, pool: StreamPool) -> None:
        self.pool = pool

    def collect(self):
        streams = [s for s in self.pool.list() if s["status"] in ("starting", "running")]
        active = GaugeMetricFamily("streamseg_streams", "streams being served")
        active.add_metric([], len(streams))
        frames = CounterMetricFamily("streamseg_stream_frames", "original frames labelled", labels=["stream"])
        late = CounterMetricFamily("streamseg_stream_late_chunks", "chunks labelled after the next had arrived",
                                   labels=["stream"])
        lag = GaugeMetricFamily("streamseg_stream_lag_seconds", "seconds behind the source", labels=["stream"])
        for s in streams:
            frames.add_metric([s["id"]], s["frames"])
            late.add_metric([s["id"]], s["late_chunks"])
            if s["lag_s"] is not None:
                lag.add_metric([s["id"]], s["lag_s"])
        steps = CounterMetricFamily("streamseg_failed_steps", "model steps that raised")
        steps.add_metric([], self.pool.failed_steps)
        yield from (active, frames, late, lag, steps)


def build_app(streamer: Streamer, options: ServerOptions | None = None) -> FastAPI:
    """The ASGI app: a `StreamPool` over ``streamer`` and the endpoints of the module docstring."""
    opts = options or ServerOptions()
    registry = CollectorRegistry()
    events_total = Counter("streamseg_events", "events emitted", ["kind"], registry=registry)
    dropped = Counter("streamseg_dropped_subscribers", "event subscribers dropped for reading too slowly",
                      registry=registry)
    webhook_failures = Counter("streamseg_webhook_failures", "events the webhook could not deliver",
                               registry=registry)
    rejected = Counter("streamseg_rejected_requests", "requests refused (auth, size, bad input)", ["reason"],
                       registry=registry)
    batch_size = Histogram("streamseg_batch_size", "streams per model step", registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128))
    step_seconds = Histogram("streamseg_step_seconds",
                             "wall time of one engine step (preprocessing, model, labels, events)", registry=registry)
    chunk_latency = Histogram("streamseg_chunk_latency_seconds", "from a chunk queued (its last frame read) to "
                              "its labels and events", registry=registry)
    broker = _Broker(opts.subscriber_queue, dropped)
    webhook = _Webhook(opts.webhook, webhook_failures) if opts.webhook else None

    def on_event(sid: str, event: dict[str, Any]) -> None:
        events_total.labels("segment" if "label" in event else "status").inc()
        broker.publish(sid, event)
        if webhook is not None:
            webhook.send(event)

    def on_step(timing: StepTiming) -> None:
        batch_size.observe(timing.batch)
        step_seconds.observe(timing.seconds)
        for seconds in timing.latencies_s:
            chunk_latency.observe(seconds)

    pool = StreamPool(streamer, opts.chunk, max_streams=opts.max_streams, buffer_chunks=opts.buffer_chunks,
                      retries=opts.retries, backoff_s=opts.backoff_s, on_event=on_event, on_step=on_step,
                      source_options=opts.source_options, decode_workers=opts.decode_workers,
                      stage_chunks=opts.stage_chunks, fixed_batch=opts.fixed_batch)
    registry.register(_StreamCollector(pool))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        broker.loop = asyncio.get_running_loop()
        yield
        await run_in_threadpool(pool.close)
        if webhook is not None:
            webhook.close()

    app = FastAPI(title="streamseg serve", lifespan=lifespan)
    app.state.pool = pool

    def authorized(header: str | None) -> bool:
        return opts.token is None or hmac.compare_digest(header or "", f"Bearer {opts.token}")

    def control(request: Request) -> None:
        if not authorized(request.headers.get("authorization")):
            rejected.labels("auth").inc()
            raise HTTPException(401, "missing or wrong token (Authorization: Bearer <token>)")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > opts.max_body):
            rejected.labels("size").inc()
            return JSONResponse({"detail": f"request body over {opts.max_body} bytes"}, status_code=413)
        return await call_next(request)

    def stream_or_404(sid: str, what=lambda sid: pool.info(sid)):
        try:
            return what(sid)
        except UnknownStream:
            rejected.labels("unknown").inc()
            raise HTTPException(404, f"no stream {sid!r}") from None

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> Response:
        ok = pool.alive
        return JSONResponse({"ready": ok, "streams": pool.active()}, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @app.get("/model")
    def model() -> dict:
        return {**asdict(pool.meta), "chunk": pool.chunk}

    @app.get("/streams")
    def list_streams() -> list:
        return pool.list()

    @app.post("/streams", status_code=201, dependencies=[Depends(control)])
    def add_stream(body: AddStream) -> dict:
        try:
            sid = pool.add(body.source, body.name, realtime=body.realtime, fps=body.fps, reconnect=body.reconnect)
        except PoolFull as e:
            rejected.labels("full").inc()
            raise HTTPException(429, str(e)) from None
        except ValueError as e:
            rejected.labels("bad").inc()
            raise HTTPException(400, str(e)) from None
        except RuntimeError as e:  # no decode worker left to read it
            raise HTTPException(503, str(e)) from None
        return {"id": sid}

    @app.get("/streams/{sid}")
    def stream_status(sid: str) -> dict:
        return stream_or_404(sid)

    @app.delete("/streams/{sid}", dependencies=[Depends(control)])
    def remove_stream(sid: str) -> dict:
        stream_or_404(sid, pool.remove)
        return {"id": sid, "removed": True}

    @app.get("/streams/{sid}/events")
    def stream_events(sid: str) -> list:
        return stream_or_404(sid, pool.events)

    @app.get("/events")
    async def sse(stream: str | None = None) -> StreamingResponse:
        sub = broker.subscribe(stream)

        async def body():
            try:
                yield ": subscribed\n\n"
                while (event := await sub[1].get()) is not None:
                    kind = "segment" if "label" in event else "status"
                    yield f"event: {kind}\ndata: {json.dumps(event)}\n\n"
            finally:
                broker.unsubscribe(sub)

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.websocket("/ws/events")
    async def ws_events(ws: WebSocket, stream: str | None = None) -> None:
        await ws.accept()
        sub = broker.subscribe(stream)
        closed = asyncio.ensure_future(ws.receive())  # a disconnect (or server shutdown) ends the wait
        try:
            while True:
                get = asyncio.ensure_future(sub[1].get())
                await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed.done():
                    get.cancel()
                    return
                if (event := get.result()) is None:
                    await ws.close(1008, "too slow: dropped")
                    return
                await ws.send_text(json.dumps(event))
        except WebSocketDisconnect:
            pass
        finally:
            closed.cancel()
            broker.unsubscribe(sub)

    pushing: set[str] = set()  # streams with a connected pusher (one at a time: frames arrive in order)

    @app.websocket("/streams/{sid}/frames")
    async def push_frames(ws: WebSocket, sid: str) -> None:
        if not authorized(ws.headers.get("authorization")):
            rejected.labels("auth").inc()
            await ws.close(1008, "missing or wrong token")
            return
        try:
            pool.info(sid)
        except UnknownStream:
            rejected.labels("unknown").inc()
            await ws.close(1008, f"no stream {sid!r}")
            return
        if sid in pushing:
            rejected.labels("bad").inc()
            await ws.close(1008, f"stream {sid!r} already has a pushing client")
            return
        await ws.accept()
        pushing.add(sid)
        h, w = pool.meta.sample_shape[1:]
        frame_bytes = 3 * h * w
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data, text = message.get("bytes"), message.get("text")
                if data is not None:
                    if len(data) > opts.max_push_bytes:
                        rejected.labels("size").inc()
                        await ws.close(1009, f"message over {opts.max_push_bytes} bytes")
                        return
                    if len(data) % frame_bytes or not data:
                        rejected.labels("bad").inc()
                        await ws.close(1003, f"expected a whole number of uint8 frames (3, {h}, {w}) "
                                             f"= {frame_bytes} bytes each, got {len(data)} bytes")
                        return
                    frames = torch.from_numpy(np.frombuffer(data, np.uint8).reshape(-1, 3, h, w).copy())
                    await run_in_threadpool(pool.push, sid, frames)
                    continue
                try:
                    end = json.loads(text or "")
                    num = end.get("num_frames") if isinstance(end, dict) and end.get("end") is True else False
                    if num is False or not (num is None or (isinstance(num, int) and num >= 0)):
                        raise ValueError
                except ValueError:
                    rejected.labels("bad").inc()
                    await ws.close(1003, 'expected binary frames or {"end": true, "num_frames": N}')
                    return
                await run_in_threadpool(pool.end, sid, num)
                await ws.send_text(json.dumps({"ended": sid}))
                await ws.close()
                return
        except UnknownStream:  # finished meanwhile: removed, or failed
            rejected.labels("unknown").inc()
            await ws.close(1008, f"stream {sid!r} has finished (see GET /streams/{sid})"[:120])
        except ValueError as e:  # frames after the end
            rejected.labels("bad").inc()
            await ws.close(1008, str(e)[:120])
        except WebSocketDisconnect:
            pass
        finally:
            pushing.discard(sid)

    @app.get("/", response_class=HTMLResponse)
    def dashboard() -> str:
        return DASHBOARD_HTML

    return app


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_host(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token."""
    if host not in LOOPBACK and token is None:
        raise ValueError(f"--host {host}: serving beyond this machine needs a token (--token-file or STREAMSEG_TOKEN)")


def uvicorn_config(app: FastAPI, opts: ServerOptions, **kwargs: Any):
    """uvicorn's settings for ``app``: pushed messages up to ``max_push_bytes``; shutdown waits 3 s at most
    for open event streams."""
    import uvicorn

    return uvicorn.Config(app, ws_max_size=opts.max_push_bytes + 1024, log_level="warning", lifespan="on",
                          timeout_graceful_shutdown=3, **kwargs)


class ServerThread:
    """The server in a background thread on a free loopback port (tests, notebooks)::

        with ServerThread(streamer, ServerOptions(token="t")) as server:
            Client(server.url, token="t").streams()
    """

    def __init__(self, streamer: Streamer, options: ServerOptions | None = None, host: str = "127.0.0.1") -> None:
        import uvicorn

        self.options = options or ServerOptions()
        check_host(host, self.options.token)
        self.app = build_app(streamer, self.options)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn_config(self.app, self.options))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def pool(self) -> StreamPool:
        return self.app.state.pool

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.perf_counter() + 30.0
        while not self.server.started:
            if not self._thread.is_alive() or time.perf_counter() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15.0)
        self._sock.close()
