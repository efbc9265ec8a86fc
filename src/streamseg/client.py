"""Python client of `streamseg serve` (HTTP with httpx, WebSocket with websockets)::

    from streamseg.client import Client

    c = Client("http://127.0.0.1:8000", token="...")     # token: STREAMSEG_TOKEN when not given
    sid = c.add("rtsp://cam.local/stream", name="cam1")    # the server pulls it
    for event in c.events(sid):                            # segment and status events, as they come
        print(event)
    c.push_video("clip.mp4", name="clip")                  # decode here, push frames over a WebSocket
    c.wait(sid); c.segments(sid); c.status(sid); c.remove(sid)

Errors from the server raise `ServerError` with its status code and message.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["Client", "ReplicaClient", "ServerError", "owner_of", "read_token"]

TOKEN_ENV = "STREAMSEG_TOKEN"


def read_token(token_file: str | Path | None = None) -> str | None:
    """The control token: the first line of ``token_file`` when given, else ``$STREAMSEG_TOKEN``, else None."""
    if token_file is not None:
        path = Path(token_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such token file")
        token = path.read_text().strip().splitlines()[0].strip() if path.read_text().strip() else ""
        if not token:
            raise ValueError(f"{path}: the token file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


class ServerError(RuntimeError):
    """An error answer: ``status`` (HTTP code) and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _detail(response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text


class Client:
    """A `streamseg serve` server at ``url`` (``http://host:port``). ``token``: for control calls (add,
    remove, push); default: the ``STREAMSEG_TOKEN`` environment variable, if set."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._headers = headers
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ServerError(response.status_code, _detail(response))
        return response.json()

    # ---- HTTP ----
    def health(self) -> bool:
        return self.http.get("/health").status_code == 200

    def ready(self) -> bool:
        return self.http.get("/ready").status_code == 200

    def model(self) -> dict[str, Any]:
        """The served model's metadata (`DeployMeta` fields and ``chunk``)."""
        return self._call("GET", "/model")

    def streams(self) -> list[dict[str, Any]]:
        return self._call("GET", "/streams")

    def status(self, sid: str) -> dict[str, Any]:
        return self._call("GET", f"/streams/{sid}")

    def add(self, source: str | None = None, name: str | None = None, *, realtime: bool = False,
            fps: float | None = None, reconnect: bool = False) -> str:
        """A new stream pulled by the server from ``source`` (None: a push stream); returns its id.
        ``reconnect``: open a live source again when it ends or fails, and go on (`StreamPool.add`)."""
        body = {"source": source, "name": name, "realtime": realtime, "fps": fps, "reconnect": reconnect}
        return self._call("POST", "/streams", json=body)["id"]

    def remove(self, sid: str) -> None:
        self._call("DELETE", f"/streams/{sid}")

    def segments(self, sid: str) -> list[dict[str, Any]]:
        """The stream's segment events so far."""
        return self._call("GET", f"/streams/{sid}/events")

    def metrics(self) -> str:
        return self.http.get("/metrics").text

    def wait(self, sid: str, timeout_s: float = 300.0, poll_s: float = 0.05) -> dict[str, Any]:
        """Poll until the stream has finished (ended, error or removed); its final status."""
        deadline = time.monotonic() + timeout_s
        while (info := self.status(sid))["status"] in ("starting", "running"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {sid} still {info['status']} after {timeout_s} s")
            time.sleep(poll_s)
        return info

    # ---- WebSocket ----
    def _ws_url(self, path: str) -> str:
        return "ws" + self.url[len("http"):] + path

    def events(self, sid: str | None = None, until_finished: bool = True) -> Iterator[dict[str, Any]]:
        """Events as they come (one stream, or all when None). With ``until_finished`` and one stream, stop
        after its final status event (ended, error, removed). Subscribe before starting the stream to
        see all its events (or read the past ones with `segments`)."""
        from websockets.sync.client import connect

        query = f"?stream={sid}" if sid is not None else ""
        with connect(self._ws_url(f"/ws/events{query}")) as ws:
            for message in ws:
                event = json.loads(message)
                yield event
                if until_finished and sid is not None and event.get("status") in ("ended", "error", "removed"):
                    return

    def push_frames(self, sid: str, chunks: Iterable[Any],
                    num_frames: int | Callable[[], int | None] | None = None) -> None:
        """Push sampled frames (each item ``uint8 (n, 3, H, W)`` at the model's input size, numpy or torch)
        to a push stream, then end it. ``num_frames``: its original frame count if known, or a function
        asked once every chunk was sent."""
        import numpy as np
        from websockets.sync.client import connect

        with connect(self._ws_url(f"/streams/{sid}/frames"), additional_headers=self._headers,
                     max_size=None) as ws:
            for frames in chunks:
                ws.send(np.ascontiguousarray(np.asarray(frames), np.uint8).tobytes())
            total = num_frames() if callable(num_frames) else num_frames
            ws.send(json.dumps({"end": True, "num_frames": total}))
            reply = json.loads(ws.recv())
            if reply.get("ended") != sid:
                raise ServerError(0, f"unexpected reply {reply}")

    def push_video(self, path: str | Path, name: str | None = None, *, fps: float | None = None,
                   frames_per_message: int | None = None, **source_options: Any) -> str:
        """Decode a video (file, URL, device: `StreamSource`) here at the model's sample rate and input size,
        push it to a new push stream and end it; returns the stream id. Labels then match
        `streamseg infer` on the same source (same decode)."""
        from .deploy.sources import StreamSource, source_name

        meta = self.model()
        chunk = frames_per_message or meta["chunk"]
        with StreamSource(path, meta["sample_rate"], tuple(meta["sample_shape"][1:]), **source_options) as source:
            sid = self.add(None, name or source_name(path), fps=fps or source.fps or None)

            def chunks():
                while len(frames := source.read(chunk)) > 0:
                    yield frames.numpy()

            self.push_frames(sid, chunks(), lambda: source.num_frames)
        return sid

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def owner_of(stream: str, replicas: list[str]) -> str:
    """The replica (base URL) that owns ``stream``: rendezvous (highest random weight) hashing, so every
    client computes the same owner with no coordination, and removing a replica moves only its streams."""
    return max(replicas, key=lambda url: hashlib.sha256(f"{url.rstrip('/')}|{stream}".encode()).digest())


class ReplicaClient:
    """Several `streamseg serve` replicas as one: each stream lives on the one replica `owner_of` names
    (its state is there), so calls about a stream go to that replica only; `streams` gathers all.

    A stream's id is its name, chosen here (``name``, else the source's name) before it is routed, and
    the owner refuses a name it already has instead of renaming it, so the id always routes back.
    """

    def __init__(self, urls: list[str], token: str | None = None, timeout_s: float = 30.0) -> None:
        if len(set(urls)) != len(urls) or not urls:
            raise ValueError(f"expected distinct replica URLs, got {urls}")
        self.clients = {url.rstrip("/"): Client(url, token, timeout_s) for url in urls}

    def owner(self, sid: str) -> Client:
        return self.clients[owner_of(sid, list(self.clients))]

    def add(self, source: str | None, name: str | None = None, **kwargs: Any) -> str:
        from .deploy.sources import source_name

        if name is None and source is None:
            raise ValueError("a push stream needs a name to be routed")
        name = name or source_name(source)
        return self.owner(name).add(source, name, **kwargs)

    def push_video(self, path: str | Path, name: str | None = None, **kwargs: Any) -> str:
        from .deploy.sources import source_name

        name = name or source_name(path)
        return self.owner(name).push_video(path, name, **kwargs)

    def streams(self) -> list[dict[str, Any]]:
        """Every replica's streams, each with its ``replica`` URL."""
        return [{**s, "replica": url} for url, c in self.clients.items() for s in c.streams()]

    def status(self, sid: str) -> dict[str, Any]:
        return self.owner(sid).status(sid)

    def segments(self, sid: str) -> list[dict[str, Any]]:
        return self.owner(sid).segments(sid)

    def wait(self, sid: str, timeout_s: float = 300.0) -> dict[str, Any]:
        return self.owner(sid).wait(sid, timeout_s)

    def remove(self, sid: str) -> None:
        self.owner(sid).remove(sid)

    def events(self, sid: str, until_finished: bool = True) -> Iterator[dict[str, Any]]:
        return self.owner(sid).events(sid, until_finished)

    def close(self) -> None:
        for c in self.clients.values():
            c.close()

    def __enter__(self) -> ReplicaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
