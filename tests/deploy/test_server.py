"""`streamseg serve`: a real server on loopback driven by the real client.

Streams batched together (pulled by the server or pushed by the client) get exactly the labels and
events `infer` gives each video alone; streams joining and leaving mid-run do not disturb the others;
control calls need the token; bad requests get 4xx answers and leave the server serving; a source that
cannot be opened is retried, then reported as an error event (also to the webhook)."""

from __future__ import annotations

import http.server
import json
import threading

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from streamseg.client import Client, ServerError
from streamseg.deploy.infer import infer_video
from streamseg.deploy.server import ServerOptions, ServerThread

from .test_infer import varying_streamer

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")

TOKEN = "s3cret-test-token"
CHUNK = 6
STRIP = ("latency_s", "confidence")  # wall time; batched float kernels round differently (checked apart)


def _same(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in STRIP} for e in events]


def assert_same_events(got: list[dict], want: list[dict], video: str) -> None:
    """The events of ``want`` (renamed ``video``); confidences equal to float rounding."""
    want = [{**e, "video": video} for e in want]
    assert _same(got) == _same(want), video
    assert [e["confidence"] for e in got] == pytest.approx([e["confidence"] for e in want], abs=1e-4), video


@pytest.fixture(scope="module")
def videos(synth_video_root):
    return sorted((synth_video_root / "Videos").glob("*.mp4"))


@pytest.fixture(scope="module")
def streamer(videos):
    return varying_streamer(videos[0])


@pytest.fixture(scope="module")
def expected(streamer, videos):
    """Per video: the events `infer` gives it alone (stream id = the video's name)."""
    return {v.stem: infer_video(streamer, v, chunk=CHUNK) for v in videos}


def test_batched_streams_give_the_events_of_infer(streamer, videos, expected) -> None:
    """6 pulled + 2 pushed streams at once; one paced stream removed mid-run, one added late."""
    with ServerThread(streamer, ServerOptions(chunk=CHUNK, token=TOKEN)) as server, Client(server.url, TOKEN) as c:
        assert c.health() and c.ready()
        seen: list[dict] = []
        listening = threading.Event()

        def listen() -> None:
            with connect(server.url.replace("http", "ws") + "/ws/events") as ws:
                listening.set()
                try:
                    for message in ws:
                        seen.append(json.loads(message))
                except ConnectionClosed:  # the server shuts down at the end of the test
                    pass

        threading.Thread(target=listen, daemon=True).start()
        assert listening.wait(10)
        leaver = c.add(str(videos[1]), name="leaver", realtime=True)  # paced: still running when removed
        pulled = [c.add(str(v)) for v in videos]
        pushed = [c.push_video(v, name=f"push-{v.stem}") for v in videos[:2]]
        c.remove(leaver)
        late = c.add(str(videos[2]), name="late")
        finals = {sid: c.wait(sid) for sid in [*pulled, *pushed, late]}
        assert c.wait(leaver)["status"] == "removed"

        for sid, final in finals.items():
            video = sid.removeprefix("push-") if sid != "late" else videos[2].stem
            want = expected[video]
            assert final["status"] == "ended" and final["frames"] == len(want.labels), sid
            assert_same_events(c.segments(sid), want.events, sid)
        removed = c.status(leaver)
        left = c.segments(leaver)
        assert 0 < removed["frames"] < len(expected[videos[1].stem].labels)  # stopped mid-way
        assert left[-1]["end"] == removed["frames"]  # its open segment was closed at the removal

        pool = server.pool
        chunks = sum(s["chunks"] for s in c.streams())
        assert pool.steps < chunks  # chunks of several streams shared model calls
        metrics = c.metrics()
        assert "streamseg_batch_size_bucket" in metrics and "streamseg_events_total" in metrics
        # the WebSocket subscriber saw every segment of every stream, and each stream's end
        for sid in finals:
            assert [e for e in seen if e.get("video") == sid and "label" in e] == c.segments(sid)
            assert {"stream": sid, "status": "ended"}.items() <= next(
                e for e in seen if e.get("stream") == sid and e.get("status") == "ended").items()
