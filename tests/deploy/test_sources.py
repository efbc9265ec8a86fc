"""`StreamSource`: what counts as a live source, and a real network stream and an FFmpeg device input
decoded as they arrive, giving exactly the frames of the file they come from."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import av
import pytest
import torch

from streamseg.data.errors import DataError
from streamseg.data.video import VideoFileSource
from streamseg.deploy.sources import StreamSource, is_stream, parse_source, source_name

SIZE, SR = (16, 16), 2


@pytest.mark.parametrize(("source", "stream", "target", "fmt", "name"), [
    ("rtsp://user:pw@cam.local:554/live?x=1", True, "rtsp://user:pw@cam.local:554/live?x=1", None, "live"),
    ("http://127.0.0.1:8000/clips/vid_003.ts", True, "http://127.0.0.1:8000/clips/vid_003.ts", None, "vid_003"),
    ("udp://239.0.0.1:1234", True, "udp://239.0.0.1:1234", None, "239.0.0.1"),
    ("/dev/video0", True, "/dev/video0", "v4l2", "video0"),
    ("lavfi:testsrc=size=64x64:rate=15", True, "testsrc=size=64x64:rate=15", "lavfi", "testsrc_size_64x64_rate_15"),
    ("data/synth/Videos/vid_000.mp4", False, "data/synth/Videos/vid_000.mp4", None, "vid_000"),
    ("nosuchformat:thing.mp4", False, "nosuchformat:thing.mp4", None, "nosuchformat:thing"),
])
def test_sources_are_told_apart(source: str, stream: bool, target: str, fmt: str | None, name: str) -> None:
    assert is_stream(source) is stream
    assert parse_source(source) == (target, fmt)
    assert source_name(source) == name


def test_explicit_format_wins() -> None:
    assert parse_source("/dev/video0", "video4linux2") == ("/dev/video0", "video4linux2")
    assert parse_source("http://h/x", "mpegts") == ("http://h/x", "mpegts")


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.mp4: video file not found"):
        StreamSource(tmp_path / "missing.mp4")
    with pytest.raises(DataError, match="has no input format 'nosuchdemuxer'"):
        StreamSource("udp://127.0.0.1:9", fmt="nosuchdemuxer")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="junk.mp4: cannot open as a video"):
        StreamSource(tmp_path / "junk.mp4")
    with pytest.raises(DataError, match=r"127.0.0.1:9/x.ts: cannot open as a stream or device"):
        StreamSource("http://127.0.0.1:9/x.ts", timeout_s=2)  # nothing listens on port 9


def _read_all(source) -> torch.Tensor:
    chunks = []
    while len(frames := source.read(5)) > 0:
        chunks.append(frames)
    return torch.cat(chunks)


def test_file_frames_equal_the_training_decoder(synth_video_root) -> None:
    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    with StreamSource(video, SR, SIZE) as src, VideoFileSource(video, SR, SIZE) as ref:
        assert not src.live and src.num_frames == ref.num_frames and src.fps == 15.0
        torch.testing.assert_close(_read_all(src), ref.read(10_000), rtol=0, atol=0)
        assert src.ended and src.decoded == src.num_frames
        assert src.media_time_s == pytest.approx((src.num_frames - 1) / 15.0)
    with StreamSource(video, SR, SIZE, decode_threads=1) as one, VideoFileSource(video, SR, SIZE) as ref:
        assert one._container.streams.video[0].codec_context.thread_count == 1
        torch.testing.assert_close(_read_all(one), ref.read(10_000), rtol=0, atol=0)
    with pytest.raises(DataError, match=r"\.mp4: decode_threads must be an int >= 0, got -1"):
        StreamSource(video, decode_threads=-1)


def remux_to_mpegts(mp4: Path, out: Path) -> Path:
    """The same coded frames in an MPEG-TS container (a live-style stream: no length in any header).
    ``dump_extra`` repeats the codec's global header in-band, as a broadcast stream carries it."""
    from av.bitstream import BitStreamFilterContext

    with av.open(str(mp4)) as inp, av.open(str(out), "w", format="mpegts") as dst:
        stream = inp.streams.video[0]
        ostream = dst.add_stream_from_template(stream)
        bsf = BitStreamFilterContext("dump_extra", stream, ostream)
        for packet in [*inp.demux(stream), None]:
            for p in bsf.filter(None if packet is None or packet.dts is None else packet):
                p.stream = ostream
                dst.mux(p)
            if packet is None:
                break
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def http_dir(tmp_path):
    """(folder, base URL): a real HTTP server on 127.0.0.1 serving ``folder`` from a thread."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_http_stream_gives_the_frames_of_its_file(synth_video_root, http_dir) -> None:
    folder, base = http_dir
    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[1]
    remux_to_mpegts(video, folder / "cam.ts")
    with StreamSource(f"{base}/cam.ts", SR, SIZE) as live, VideoFileSource(video, SR, SIZE) as ref:
        assert live.live and live.num_frames is None  # length unknown while it runs
        got = _read_all(live)
        assert live.num_frames == live.decoded == ref.num_frames  # known once it ended
        torch.testing.assert_close(got, ref.read(10_000), rtol=0, atol=0)


def test_ffmpeg_input_format_with_options_and_frame_limit() -> None:
    if "lavfi" not in av.formats_available:
        pytest.skip("this FFmpeg build has no lavfi input")
    # an endless test pattern, as a camera: stopped by max_frames; the graph comes in as an input option
    with StreamSource("lavfi:pattern", 1, SIZE, options={"graph": "testsrc=size=64x48:rate=10 [out0]"},
                      keep_frames=True, max_frames=12) as src:
        assert src.live and src.fps == 10.0
        first = src.read(5)
        assert first.shape == (5, 3, *SIZE) and len(src.take_frames()) == 5
        assert len(_read_all(src)) == 7 and src.num_frames == 12
        kept = src.take_frames()
        assert [(f.width, f.height) for f in kept] == [(64, 48)] * 7  # originals at their own size
        assert src.media_time_s == pytest.approx(11 / 10)
