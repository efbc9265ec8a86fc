"""`streamseg serve`: a real server on loopback driven by the real client.

Streams batched together (pulled by the server or pushed by the client) get exactly the labels and
events `infer` gives each video alone; streams joining and leaving mid-run do not disturb the others;
control calls need the token; bad requests get 4xx answers and leave the server serving; a source that
cannot be opened is retried, then reported as an error event (also to the webhook)."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from streamseg.client import Client, ServerError
from streamseg.deploy.infer import infer_video
from streamseg.deploy.server import ServerOptions, ServerThread

from ..conftest import streamseg
from .test_infer import varying_streamer
from .test_sources import http_dir, remux_to_mpegts  # noqa: F401 (http_dir is a fixture)

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
        deadline = time.monotonic() + 60
        while c.status(leaver)["frames"] == 0:  # its first chunk (due after 0.8 s) labelled: mid-way now
            assert time.monotonic() < deadline, "the paced stream never got a chunk labelled"
            time.sleep(0.02)
        c.remove(leaver)
        pushed = [c.push_video(v, name=f"push-{v.stem}") for v in videos[:2]]
        late = c.add(str(videos[2]), name="late")
        finals = {sid: c.wait(sid) for sid in [*pulled, *pushed, late]}
        assert c.wait(leaver)["status"] == "removed"

        for sid, final in finals.items():
            video = sid.removeprefix("push-") if sid != "late" else videos[2].stem
            want = expected[video]
            assert final["status"] == "ended" and final["frames"] == len(want.labels), sid
            np.testing.assert_array_equal(server.pool.labels(sid), want.labels)
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
        assert f"streamseg_chunk_latency_seconds_count {float(chunks)}" in metrics  # one latency per chunk
        # the WebSocket subscriber saw every segment of every stream, and each stream's end
        for sid in finals:
            assert [e for e in seen if e.get("video") == sid and "label" in e] == c.segments(sid)
            assert {"stream": sid, "status": "ended"}.items() <= next(
                e for e in seen if e.get("stream") == sid and e.get("status") == "ended").items()


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_refusals_bad_requests_and_a_dead_source(streamer, videos, expected) -> None:
    """Control calls without the token, unknown streams, malformed and oversized requests, wrong frames get
    4xx answers; a source that cannot be opened is retried, then ends as an error event (webhook too);
    a good stream served alongside is unharmed."""
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    opts = ServerOptions(chunk=CHUNK, token=TOKEN, retries=2, backoff_s=0.05, max_body=1024,
                         webhook=f"http://127.0.0.1:{hook.server_address[1]}/hook",
                         source_options={"timeout_s": 2.0})
    try:
        with ServerThread(streamer, opts) as server, Client(server.url, TOKEN) as c:
            sse: list[tuple[str, dict]] = []
            subscribed = threading.Event()

            def read_sse() -> None:  # Server-Sent Events of one stream, subscribed before it starts
                with httpx.stream("GET", f"{server.url}/events", params={"stream": videos[3].stem}) as r:
                    kind = None
                    for line in r.iter_lines():
                        subscribed.set()
                        if line.startswith("event: "):
                            kind = line[len("event: "):]
                        elif line.startswith("data: "):
                            sse.append((kind, json.loads(line[len("data: "):])))
                            if sse[-1][1].get("status") == "ended":
                                return

            reader = threading.Thread(target=read_sse, daemon=True)
            reader.start()
            assert subscribed.wait(10)
            good = c.add(str(videos[3]))
            anonymous = Client(server.url, token="")
            with pytest.raises(ServerError) as no_token:
                anonymous.add(str(videos[0]))
            with pytest.raises(ServerError) as wrong_token:
                Client(server.url, token="wrong").remove(good)
            assert no_token.value.status == wrong_token.value.status == 401
            assert anonymous.streams()  # reading needs no token
            with pytest.raises(ServerError) as unknown:
                c.status("nope")
            assert unknown.value.status == 404 and "nope" in str(unknown.value)
            with pytest.raises(ServerError) as bad_name:
                c.add(str(videos[0]), name="../etc")
            assert bad_name.value.status == 400 and "stream name" in str(bad_name.value)
            with pytest.raises(ServerError) as replayed:  # reconnecting a file would replay it
                c.add(str(videos[0]), reconnect=True)
            assert replayed.value.status == 400 and "reconnect needs a live source" in str(replayed.value)
            extra = httpx.post(f"{server.url}/streams", json={"source": "x", "bogus": 1},
                               headers={"Authorization": f"Bearer {TOKEN}"})
            big = httpx.post(f"{server.url}/streams", content=b"{" + b" " * 2000 + b"}",
                             headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            assert (extra.status_code, big.status_code) == (422, 413)

            push = c.add(None, name="pushed")
            ws_url = server.url.replace("http", "ws") + "/streams/pushed/frames"
            with pytest.raises(InvalidStatus) as refused:  # no token: the handshake is refused
                connect(ws_url)
            assert refused.value.response.status_code == 403
            with connect(ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                ws.send(b"\x00" * 7)  # not a whole frame
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv()
            assert closed.value.rcvd.code == 1003 and "whole number of uint8 frames" in closed.value.rcvd.reason

            dead = c.add("http://127.0.0.1:9/gone.ts", name="dead", reconnect=True)  # nothing listens on port 9
            final = c.wait(dead)
            assert final["status"] == "error" and final["retries"] == 2 and "gone.ts" in final["error"]
            assert final["reconnect"] and final["reconnects"] == 0  # never open: nothing to reconnect
            assert c.wait(good)["status"] == "ended"
            assert_same_events(c.segments(good), expected[videos[3].stem].events, good)
            reader.join(10)
            assert [e for kind, e in sse if kind == "segment"] == c.segments(good)
            assert [e["status"] for kind, e in sse if kind == "status"] == ["running", "ended"]
            c.remove(push)
            assert c.ready() and c.wait(push)["status"] == "removed"
            assert 'streamseg_rejected_requests_total{reason="auth"} 3.0' in c.metrics()
            good_events = c.segments(good)
            deadline = time.monotonic() + 30
            while not any(e.get("stream") == good and e.get("status") == "ended" for e in _Hook.received):
                assert time.monotonic() < deadline, "the webhook did not get the good stream's end"
                time.sleep(0.02)
    finally:
        hook.shutdown()
    assert [e["status"] for e in _Hook.received if e.get("stream") == "dead"] == ["retrying", "retrying", "error"]
    assert [e for e in _Hook.received if e.get("video") == good] == good_events


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stateful_onnx(path):
    """A hand-built ONNX streaming step (no torch export: that takes minutes on a busy CPU): each sampled
    frame's class is the bin of its brightness plus half the previous chunk's mean brightness (the state),
    so labels vary and a state mixed up between streams changes them."""
    import onnx
    from onnx import TensorProto, helper

    from .test_infer import tiny_meta

    k = 4
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["b"], axes=[1, 3, 4], keepdims=0),  # (B, T)
        helper.make_node("Mul", ["state_in_0", "half"], ["s"]),  # (B, 1)
        helper.make_node("Add", ["b", "s"], ["v"]),
        helper.make_node("Unsqueeze", ["v", "axis1"], ["v3"]),  # (B, 1, T)
        helper.make_node("Sub", ["v3", "bins"], ["d"]),  # (B, K, T)
        helper.make_node("Abs", ["d"], ["a"]),
        helper.make_node("Neg", ["a"], ["logits"]),
        helper.make_node("ReduceMean", ["b"], ["state_out_0"], axes=[1], keepdims=1),  # (B, 1)
    ]
    bins = np.linspace(-1.5, -0.3, k).tolist()  # around b + s / 2 of the synthetic videos
    consts = [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
              helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
              helper.make_tensor("bins", TensorProto.FLOAT, [1, k, 1], bins)]
    graph = helper.make_graph(
        nodes, "brightness", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3, "T", 16, 16]),
                              helper.make_tensor_value_info("state_in_0", TensorProto.FLOAT, ["B", 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", k, "T"]),
         helper.make_tensor_value_info("state_out_0", TensorProto.FLOAT, ["B", 1])], consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    tiny_meta(state_shapes=[[1]], onnx=path.name).to_json(path.with_suffix(".json"))
    return path


def test_serve_and_client_commands_with_an_onnx_model(tmp_path, videos) -> None:
    """`streamseg serve --model m.onnx` in its own process; `streamseg client push/add/wait/segments`
    give the events `streamseg infer` gives (ONNX Runtime, batched states as numpy arrays)."""
    pytest.importorskip("onnxruntime")
    from streamseg.deploy.runtime import OnnxStreamer

    model = stateful_onnx(tmp_path / "m.onnx")
    onnx = OnnxStreamer(model, threads=1)
    (tmp_path / "token").write_text(TOKEN + "\n")
    url = f"http://127.0.0.1:{_free_port()}"
    server = subprocess.Popen([sys.executable, "-m", "streamseg.cli.main", "serve", "--model", str(model),
                               "--port", url.rsplit(":", 1)[1], "--chunk", str(CHUNK), "--threads", "1",
                               "--token-file", str(tmp_path / "token"), "--source", str(videos[4])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = Client(url)
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.ready():
                    break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.2)
        cli = ("client", "--server", url, "--token-file", str(tmp_path / "token"))
        refused = streamseg("client", "--server", url, "add", str(videos[5]))  # no token
        assert refused.returncode != 0 and "401" in refused.stderr and TOKEN not in refused.stderr
        replayed = streamseg(*cli, "add", str(videos[5]), "--reconnect")  # a file cannot reconnect
        assert replayed.returncode != 0 and "400" in replayed.stderr and "reconnect needs a live" in replayed.stderr
        pushed = streamseg(*cli, "push", str(videos[5]), "--name", "pushed")
        assert pushed.returncode == 0, pushed.stderr[-3000:]
        pulled = videos[4].stem  # the --source stream, started with the server
        assert json.loads(streamseg(*cli, "wait", pulled).stdout)["status"] == "ended"
        segments = streamseg(*cli, "segments", pulled)
        for video, out in ((videos[5], pushed.stdout), (videos[4], segments.stdout)):
            want = infer_video(onnx, video, chunk=CHUNK).events
            got = [json.loads(line) for line in out.splitlines()]
            assert len(got) > 2  # labels vary: several segments
            assert_same_events(got, want, "pushed" if video == videos[5] else pulled)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=60)
    assert TOKEN not in err  # the token is never logged


def test_a_slow_subscriber_is_dropped_and_counted_not_waited_for() -> None:
    from prometheus_client import CollectorRegistry, Counter

    from streamseg.deploy.server import _Broker

    dropped = Counter("dropped", "", registry=CollectorRegistry())
    broker = _Broker(size=2, dropped=dropped)
    slow, other = broker.subscribe(None), broker.subscribe("b")
    for i in range(3):  # the third event finds the slow subscriber's queue full
        broker._offer("a", {"n": i})
    assert slow not in broker.subs and dropped._value.get() == 1
    queue = slow[1]
    assert [queue.get_nowait(), queue.get_nowait()] == [{"n": 1}, None]  # None: the handler closes it
    assert other in broker.subs and other[1].empty()  # subscribed to another stream: untouched


def test_two_replicas_each_own_their_streams(streamer, videos, expected) -> None:
    """Streams spread over two servers by rendezvous hashing of their names: each lives on its owner only,
    gets `infer`'s events there, and the owner refuses a second stream of the same name."""
    from streamseg.client import ReplicaClient, owner_of

    with ServerThread(streamer, ServerOptions(chunk=CHUNK)) as a, ServerThread(streamer, ServerOptions(chunk=CHUNK)) \
            as b, ReplicaClient([a.url, b.url]) as replicas:
        names: dict[str, list[str]] = {a.url: [], b.url: []}
        for i in range(64):  # the first 3 names each replica owns (the ports, hence owners, vary run to run)
            owned = names[owner_of(f"cam{i}", [a.url, b.url])]
            if len(owned) < 3:
                owned.append(f"cam{i}")
        video_of = {n: videos[i % len(videos)] for i, n in enumerate(sorted(names[a.url] + names[b.url]))}
        for name, video in video_of.items():
            assert replicas.add(str(video), name) == name
        with pytest.raises(ServerError) as taken:
            replicas.add(str(videos[0]), names[a.url][0])
        assert taken.value.status == 400 and "taken" in str(taken.value)
        for name, video in video_of.items():
            assert replicas.wait(name)["status"] == "ended"
            assert_same_events(replicas.segments(name), expected[video.stem].events, name)
        listed = {(s["id"], s["replica"]) for s in replicas.streams()}
        assert listed == {(n, url) for url, owned in names.items() for n in owned}

    third = "http://127.0.0.1:1"  # a replica leaving moves only its own streams
    for i in range(200):
        with_third = owner_of(f"s{i}", [a.url, b.url, third])
        assert with_third == third or owner_of(f"s{i}", [a.url, b.url]) == with_third


def test_serve_command_refuses_bad_settings_before_loading_the_model(tmp_path, monkeypatch) -> None:
    from streamseg.cli.main import main

    monkeypatch.delenv("STREAMSEG_TOKEN", raising=False)
    missing = tmp_path / "missing.onnx"  # never opened: each refusal comes first
    with pytest.raises(SystemExit, match="--host 0.0.0.0: serving beyond this machine needs a token"):
        main(["serve", "--model", str(missing), "--host", "0.0.0.0"])
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SystemExit, match="empty: the token file is empty"):
        main(["serve", "--model", str(missing), "--token-file", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="--buffer-chunks must be >= 1, got 0"):
        main(["serve", "--model", str(missing), "--buffer-chunks", "0"])
    with pytest.raises(SystemExit, match="--decode-workers must be >= 0, got -1"):
        main(["serve", "--model", str(missing), "--decode-workers", "-1"])
    with pytest.raises(SystemExit, match="--decode-threads must be >= 0, got -2"):
        main(["serve", "--model", str(missing), "--decode-threads", "-2"])
    with pytest.raises(SystemExit, match="--fixed-batch needs a PyTorch model .* not an ONNX export: .*missing.onnx"):
        main(["serve", "--model", str(missing), "--fixed-batch"])
    with pytest.raises(SystemExit, match="--reconnect needs live --source streams .* not the file .*v.mp4"):
        main(["serve", "--model", str(missing), "--source", "rtsp://cam/1", "--source", str(tmp_path / "v.mp4"),
              "--reconnect"])
    with pytest.raises(SystemExit, match="missing.json: no metadata file"):
        main(["serve", "--model", str(missing), "--source", "rtsp://cam/1", "--reconnect"])


def test_serve_command_gives_its_decode_threads_to_every_pulled_source(tmp_path, monkeypatch) -> None:
    """``--decode-threads`` reaches the pool's source options (one FFmpeg thread per reader by default)."""
    import streamseg.deploy.runtime as runtime
    import streamseg.deploy.server as server
    from streamseg.cli.main import main

    class Built(Exception):
        pass

    def build_app(streamer, opts):
        raise Built(opts.source_options["decode_threads"])

    monkeypatch.delenv("STREAMSEG_TOKEN", raising=False)
    monkeypatch.setattr(runtime, "open_streamer", lambda *a, **k: object())
    monkeypatch.setattr(server, "build_app", build_app)
    for argv, want in (([], 1), (["--decode-threads", "0"], 0), (["--decode-threads", "4"], 4)):
        with pytest.raises(Built) as built:
            main(["serve", "--model", str(tmp_path / "model.onnx"), *argv])
        assert built.value.args == (want,)


def test_a_source_that_dies_mid_stream_ends_alone(streamer, videos, expected, http_dir) -> None:
    """A network stream cut off half-way ends with the segments it had (the open one closed where the
    frames stopped, the earlier ones those of `infer`); a stream served beside it is untouched."""
    folder, base = http_dir
    data = remux_to_mpegts(videos[2], folder / "full.ts").read_bytes()
    (folder / "cut.ts").write_bytes(data[: len(data) // 2])  # the camera stops sending half-way
    with ServerThread(streamer, ServerOptions(chunk=CHUNK)) as server, Client(server.url) as c:
        cut, good = c.add(f"{base}/cut.ts", name="cut"), c.add(str(videos[1]), name="good")
        final = c.wait(cut)
        whole = expected[videos[2].stem]
        assert final["status"] == "ended" and 0 < final["frames"] < len(whole.labels)
        events = c.segments(cut)
        assert len(events) > 1 and events[-1]["end"] == final["frames"]
        # closed before the cut: the segments of `infer` (those closed by the short last chunk were emitted
        # at another frame count, so that field is left out)
        before = [{**e, "video": "cut"} for e in whole.events[: len(events) - 1]]
        assert [{k: v for k, v in e.items() if k != "emitted_at_frame"} for e in _same(events[:-1])] == \
            [{k: v for k, v in e.items() if k != "emitted_at_frame"} for e in _same(before)]
        assert c.wait(good)["status"] == "ended"
        assert_same_events(c.segments(good), expected[videos[1].stem].events, "good")
