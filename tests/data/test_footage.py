"""Footage as cameras and phones make it (issue #25), made by FFmpeg at test time: a phone clip rotated by
its display matrix, variable frame rate, interlaced MPEG-2 in .ts, other containers and suffix cases
(.mkv, .mov, .MP4), a stream-copy trim, a file cut short, an empty file. Per variant: frames decoded
equal FFmpeg's count, frames stand as FFmpeg shows them, event times are the frames' timestamps, the
dataset check's findings, and what a run on a corrupt tail keeps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from streamseg.data.check import check_dataset
from streamseg.data.decode import DecodeOptions
from streamseg.data.errors import DataError
from streamseg.data.video import VideoFileSource
from streamseg.data.video_scan import scan_video
from streamseg.deploy.infer import infer_video, sources
from streamseg.deploy.sources import StreamSource
from streamseg.engine.datacheck import run_data_problems

from .test_video import unpack_i420

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

W, H = 32, 24  # landscape pixels; a phone's rotated clip shows them as 24 wide, 32 high


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-threads", "1", *args], check=True)


def ffprobe(path: Path, *entries: str) -> list[str]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", *entries, "-of", "csv=p=0", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return [line.strip().rstrip(",") for line in out.splitlines() if line.strip()]


def ffmpeg_frame_count(path: Path) -> int:
    return int(ffprobe(path, "-count_frames", "-show_entries", "stream=nb_read_frames")[0])


def ffmpeg_frame_times(path: Path) -> list[float]:
    return [float(t) for t in ffprobe(path, "-show_entries", "frame=pts_time")]


def ffmpeg_rgb(path: Path) -> np.ndarray:
    """FFmpeg's own decode (autorotated, as a player shows it): rgb24 bytes, ``uint8 (n, H*W*3)``."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-threads", "1", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(ffmpeg_frame_count(path), -1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """The variants, a few frames each at 32x24."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        if os.environ.get("STREAMSEG_REQUIRE_FFMPEG"):
            pytest.fail("STREAMSEG_REQUIRE_FFMPEG is set and ffmpeg/ffprobe are not on PATH")
        pytest.skip("ffmpeg and ffprobe make the test videos (Debian package ffmpeg; .ci/run installs it)")
    d = tmp_path_factory.mktemp("footage")
    src = f"testsrc=size={W}x{H}:rate=10"
    x264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "5"]
    ffmpeg("-f", "lavfi", "-i", f"{src}:duration=1.2", *x264, str(d / "base.mp4"))
    ffmpeg("-i", str(d / "base.mp4"), "-c", "copy", str(d / "base.mkv"))
    ffmpeg("-i", str(d / "base.mp4"), "-c", "copy", str(d / "base.mov"))
    shutil.copy(d / "base.mp4", d / "upper.MP4")
    for turn in (90, 270):  # a phone's portrait clip: landscape pixels plus a display matrix
        ffmpeg("-i", str(d / "base.mp4"), "-c", "copy", "-metadata:s:v:0", f"rotate={turn}", str(d / f"rot{turn}.mp4"))
    # 30 fps for half a second, then 10 fps: timestamps, not index / rate, say when a frame is
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate=30:duration=0.5", "-f", "lavfi", "-i",
           f"{src}:duration=0.5", "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-fps_mode", "vfr",
           *x264, str(d / "vfr.mp4"))
    # broadcast-style interlaced MPEG-2 in a transport stream: fields woven from a 20 fps source
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate=20:duration=1", "-vf", "tinterlace=interleave_top",
           "-flags", "+ildct+ilme", "-c:v", "mpeg2video", "-f", "mpegts", str(d / "inter.ts"))
    # a stream-copy trim: its header counts the leading non-key frames that no decoder shows
    ffmpeg("-f", "lavfi", "-i", f"{src}:duration=3", *x264, "-g", "10", "-movflags", "faststart", str(d / "long.mp4"))
    ffmpeg("-ss", "0.45", "-i", str(d / "long.mp4"), "-c", "copy", str(d / "trim.mp4"))
    data = (d / "long.mp4").read_bytes()  # the index first, then the tail cut off: a corrupt tail
    (d / "cut.mp4").write_bytes(data[: len(data) * 6 // 10])
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("not a video\n")
    return {p.name: p for p in d.iterdir()}


DECODABLE = ["base.mp4", "base.mkv", "base.mov", "upper.MP4", "rot90.mp4", "rot270.mp4", "vfr.mp4", "inter.ts",
             "trim.mp4", "long.mp4"]


def read_all(source) -> torch.Tensor:
    chunks = []
    while len(chunk := source.read(7)):
        chunks.append(chunk)
    return torch.cat(chunks)


@pytest.mark.parametrize("name", DECODABLE)
def test_frames_decoded_equal_ffmpegs_count(clips, name) -> None:
    path = clips[name]
    want = ffmpeg_frame_count(path)
    assert scan_video(path, cache=False).frames == want
    with VideoFileSource(path) as training:  # trims no longer refused for their header's count
        assert len(read_all(training)) == want == training.num_frames
    with StreamSource(path) as inference:
        assert len(read_all(inference)) == want == inference.decoded and inference.ended_early is None


@pytest.mark.parametrize("name", ["base.mp4", "base.mkv", "upper.MP4", "rot90.mp4", "rot270.mp4"])
def test_frames_stand_as_ffmpeg_shows_them(clips, name) -> None:
    path = clips[name]
    with VideoFileSource(path) as source:
        frames = read_all(source).permute(0, 2, 3, 1).numpy()  # (n, H, W, 3)
        turn = source.rotation
    assert turn == {"rot90.mp4": 90, "rot270.mp4": 270}.get(name, 0)
    assert frames.shape[1:3] == ((W, H) if turn else (H, W))  # portrait when rotated
    shown = ffmpeg_rgb(path).reshape(frames.shape)
    # same pixels up to the two FFmpeg builds' colour conversion (PyAV's bundled one, the system's)
    assert np.abs(frames.astype(int) - shown).mean() < 3
    if turn:  # and not merely the right shape: turned the other way, the picture is wrong
        assert np.abs(np.rot90(frames, 2, axes=(1, 2)).astype(int) - shown).mean() > 20
    with StreamSource(path) as inference:  # inference and annotation see the same upright frames
        assert torch.equal(read_all(inference).permute(0, 2, 3, 1), torch.from_numpy(frames))
        assert inference.rotation == turn
    # the planes for the GPU path stand upright too: the base clip's planes, turned (losslessly)
    with VideoFileSource(path, pixel_path="i420") as turned:
        planes = unpack_i420(read_all(turned))
    with VideoFileSource(clips["base.mp4"], pixel_path="i420") as base:
        base_planes = unpack_i420(read_all(base))
    assert planes[0].shape == (len(frames), *frames.shape[1:3])
    for plane, base_plane in zip(planes, base_planes):
        np.testing.assert_array_equal(plane.numpy(), np.rot90(base_plane.numpy(), turn // 90, axes=(1, 2)))


def test_interlaced_video_is_reported_and_deinterlaced(clips) -> None:
    ts = clips["inter.ts"]
    scan = scan_video(ts, cache=False)
    assert scan.interlaced and any("interlaced" in note for note in scan.notes())
    with VideoFileSource(ts) as auto, VideoFileSource(ts, decode=DecodeOptions(deinterlace="off")) as off:
        assert auto.interlaced and auto.filters.startswith("bwdif=mode=send_frame")
        assert off.filters == ""
        a, b = read_all(auto), read_all(off)
    assert len(a) == len(b) == ffmpeg_frame_count(ts)  # one frame out per frame in: labels stay aligned
    # the woven fields' comb (odd rows against even rows of a moving picture) is smoothed away
    comb = [(x[..., 1::2, :].float() - x[..., ::2, :].float()).abs().mean() for x in (a, b)]
    assert comb[0] < comb[1]
    assert not scan_video(clips["base.mp4"], cache=False).interlaced
    with VideoFileSource(clips["base.mp4"]) as plain:
        assert plain.filters == ""  # progressive and upright: no filter graph at all


def test_variable_frame_rate_times_come_from_timestamps(clips) -> None:
    from ..deploy.test_infer import varying_streamer

    vfr = clips["vfr.mp4"]
    pts = ffmpeg_frame_times(vfr)
    times = [t - pts[0] for t in pts]
    scan = scan_video(vfr, cache=False)
    assert scan.vfr and (scan.min_fps, scan.max_fps) == (10.0, 30.0)
    streamer = varying_streamer(vfr)
    result = infer_video(streamer, vfr, chunk=3)
    assert result.footage["sampling"] == "index" and len(result.labels) == len(pts)
    assert len(result.events) >= 2 and result.events[-1]["end"] == len(pts)
    for event in result.events:
        assert event["start_s"] == round(times[event["start"]], 4)
        if event["end"] < len(pts):
            assert event["end_s"] == round(times[event["end"]], 4)
    # the last frame ends one 10 fps interval after its timestamp (index / rate would say len(pts) / 22.6 fps)
    assert result.events[-1]["end_s"] == pytest.approx(times[-1] + 0.1, abs=1e-3)
    # sampling by time: a constant grid at the model's 15 fps first (FFmpeg's fps filter)
    with StreamSource(vfr, 2, (16, 16), decode=DecodeOptions(timing="time", fps=15.0)) as timed:
        n = len(read_all(timed))
        steps = np.diff([timed.time_of(i) for i in range(timed.decoded)])
    duration = times[-1] + 0.1  # the grid covers the video's span: ceil(0.9 s * 15) frames, 1/15 s apart
    assert timed.decoded == int(np.ceil(duration * 15 - 1e-6)) and n == (timed.decoded + 1) // 2
    assert np.allclose(steps, 1 / 15, atol=1e-3)
    # the Python API takes the same choice (`predict(..., sampling="time")`) and says so in its footage
    from streamseg.api import predict

    timed_pred = predict(streamer, vfr, chunk=3, sampling="time")
    assert timed_pred.footage["sampling"] == "time" and len(timed_pred.labels) != len(result.labels)


def test_annotated_copy_stands_upright_and_keeps_the_source_clock(clips, tmp_path) -> None:
    import av

    from streamseg.api import predict

    from ..deploy.test_infer import varying_streamer

    streamer = varying_streamer(clips["base.mp4"])
    for name in ("rot90.mp4", "vfr.mp4"):
        out = tmp_path / f"annotated_{name}"
        prediction = predict(streamer, clips[name], annotate=out)
        assert prediction.footage["rotation"] == (90 if name == "rot90.mp4" else 0) and prediction.ended_early is None
        with av.open(str(out)) as container:
            frames = list(container.decode(video=0))
        pts = ffmpeg_frame_times(clips[name])
        assert len(frames) == len(pts)
        if name == "rot90.mp4":  # the portrait picture above the label panel: taller than wide
            assert frames[0].height > frames[0].width
        else:  # each frame shown when its source frame is: 30 fps, then 10 fps
            np.testing.assert_allclose([f.time - frames[0].time for f in frames], [t - pts[0] for t in pts], atol=2e-3)


def write_dataset(root: Path, videos: dict[str, tuple[Path, int]]) -> Path:
    """A dataset whose Videos/ holds the given files under new names: name -> (file, number of labels)."""
    for sub in ("groundTruth", "features", "splits", "Videos"):
        (root / sub).mkdir(parents=True)
    (root / "mapping.txt").write_text("0 a\n1 b\n")
    for name, (video, labels) in videos.items():
        (root / "groundTruth" / f"{name}.txt").write_text("a\n" * labels)
        np.save(root / "features" / f"{name}.npy", np.zeros((2, labels), np.float32))
        shutil.copy(video, root / "Videos" / f"{name}{video.suffix}")
    names = list(videos)
    (root / "splits" / "train.split1.bundle").write_text("".join(f"{n}.txt\n" for n in names[1:]))
    (root / "splits" / "test.split1.bundle").write_text(f"{names[0]}.txt\n")
    return root


def test_data_check_counts_decodable_frames_against_labels(clips, tmp_path, monkeypatch) -> None:
    counts = {n: ffmpeg_frame_count(clips[n]) for n in ("base.mp4", "trim.mp4", "inter.ts")}
    root = write_dataset(tmp_path / "ds", {
        "upper": (clips["upper.MP4"], counts["base.mp4"]),  # .MP4, .mkv, .ts: found whatever the case
        "mkv": (clips["base.mkv"], counts["base.mp4"]),
        "ts": (clips["inter.ts"], counts["inter.ts"]),
        "trim": (clips["trim.mp4"], counts["trim.mp4"]),  # header 30, 25 decode, 25 labels: sound
        "cut": (clips["cut.mp4"], 30),  # header and labels 30, the tail gone
        "phone": (clips["rot90.mp4"], counts["base.mp4"]),
        "vfr": (clips["vfr.mp4"], 5),
        "empty": (clips["empty.mp4"], 5),
        "short": (clips["base.mp4"], counts["base.mp4"] + 1),  # one label more than frames
    })
    videos = root / "Videos"
    notes: list[str] = []
    problems = check_dataset(root, notes=notes)
    by_path = {p.path: p.message for p in problems}
    assert set(by_path) == {str(videos / "cut.mp4"), str(videos / "empty.mp4"), str(videos / "short.mp4")}, problems
    assert by_path[str(videos / "cut.mp4")].startswith("decodes ")
    assert "its labels have 30" in by_path[str(videos / "cut.mp4")]
    assert by_path[str(videos / "empty.mp4")] == "empty file (0 bytes)"
    assert by_path[str(videos / "short.mp4")] == (f"decodes {counts['base.mp4']} frames but its labels have "
                                                  f"{counts['base.mp4'] + 1}; every label needs a frame")
    text = "\n".join(notes)
    assert f"{videos / 'phone.mp4'}: rotated 90 degrees" in text
    assert f"{videos / 'ts.ts'}: interlaced" in text
    assert f"{videos / 'vfr.mp4'}: variable frame rate (10-30 fps)" in text
    assert f"{videos / 'trim.mp4'}: header says 30 frames, {counts['trim.mp4']} decode" in text
    # the training gate on video input: the same findings, from the same function
    gate_notes: list[str] = []
    gate = run_data_problems(root, 1, video_input=True, notes=gate_notes)
    assert {p.path: p.message for p in gate} == by_path and gate_notes == notes

    # counted once: a second check decodes nothing while the files are unchanged ...
    import streamseg.data.video_scan as video_scan

    decoded: list[Path] = []
    real = video_scan._decode_all
    monkeypatch.setattr(video_scan, "_decode_all", lambda path: decoded.append(path) or real(path))
    assert check_dataset(root) == problems
    assert decoded == [videos / "empty.mp4"]  # a file that cannot be opened is not cached: it fails at once
    # ... and again once one changes (size and mtime are the key)
    (videos / "short.mp4").write_bytes((videos / "upper.MP4").read_bytes() + b"\0")
    check_dataset(root)
    assert decoded[2:] == [videos / "short.mp4"]


def test_a_corrupt_tail_keeps_what_was_labelled(clips, tmp_path, monkeypatch, capsys) -> None:
    from streamseg.cli.main import main
    from streamseg.deploy import runtime

    from ..deploy.test_infer import varying_streamer

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("cut.mp4", "inter.ts"):
        shutil.copy(clips[name], folder / name)
    (folder / "readme.txt").write_text("not a video\n")
    skipped: list[Path] = []
    assert sources(folder, skipped) == [folder / "cut.mp4", folder / "inter.ts"] and skipped == [folder / "readme.txt"]

    streamer = varying_streamer(clips["long.mp4"])
    monkeypatch.setattr(runtime, "open_streamer", lambda *args, **kwargs: streamer)
    out = tmp_path / "out"
    out.mkdir()
    code = main(["infer", str(folder), "--model", "m.onnx", "--pred-dir", str(out / "pred"), "--summary",
                 str(out / "summary.json"), "--events", str(out / "events.jsonl")])
    err = capsys.readouterr().err
    assert code == 3  # ended early, said by the exit code ...
    assert f"skipped 1 file(s) without a video suffix: readme.txt" in err
    assert "cut.mp4" in err and "ENDED EARLY" in err
    summary = {s["video"]: s for s in json.loads((out / "summary.json").read_text())}
    assert summary["cut"]["ended_early"] and summary["inter"]["ended_early"] is None  # ... and the summary
    assert summary["inter"]["interlaced"] and summary["inter"]["filters"].startswith("bwdif")
    decoded = summary["cut"]["frames"]
    assert 0 < decoded < 30
    # what decoded before the tail was labelled and written: predictions, and events covering it
    assert len((out / "pred" / "cut").read_text().splitlines()[1].split()) == decoded  # after the header line
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    cut = [e for e in events if e["video"] == "cut"]
    assert cut[0]["start"] == 0 and cut[-1]["end"] == decoded


def test_a_size_change_mid_stream_ends_the_video_there(clips, tmp_path) -> None:
    bigger = tmp_path / "b.ts"  # two broadcasts of different sizes, one after the other in one file
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=48x32:rate=20:duration=0.3", "-c:v", "mpeg2video", "-f", "mpegts",
           str(bigger))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(clips["inter.ts"].read_bytes() + bigger.read_bytes())
    with StreamSource(joined) as source:  # inference keeps the frames before the change (deinterlaced)
        n = len(read_all(source))
        assert source.filters.startswith("bwdif")
    assert n > 0 and source.ended_early.startswith(f"the frame size changes mid-stream at frame {n}: 32x24 -> 48x32")
    with pytest.raises(DataError, match=f"joined.ts: the frame size changes mid-stream at frame {n}"):
        read_all(VideoFileSource(joined))  # training refuses the video


@pytest.mark.parametrize("name, reason", [("empty.mp4", "empty file (0 bytes)"),
                                          ("notes.mp4", "Invalid data found when processing input")])
def test_errors_say_why_in_words(clips, name, reason) -> None:
    for open_it in (VideoFileSource, StreamSource, lambda p: scan_video(p, cache=False)):
        with pytest.raises(DataError) as caught:
            open_it(clips[name])
        assert str(caught.value).startswith(f"{clips[name]}: ") and reason in str(caught.value)
        assert "Errno" not in str(caught.value)


def test_a_training_run_keeps_the_footage_notes_with_its_config(clips, synth_video_root, tmp_path) -> None:
    """`streamseg train` on a dataset with a phone clip writes the data check's notes on how the videos were
    decoded to the run's config/footage.txt (issue #25: the run says what it trained on)."""
    from ..conftest import TINY_STREAM, streamseg

    root = tmp_path / "synth"
    shutil.copytree(synth_video_root, root)
    phone = sorted((root / "Videos").glob("*.mp4"))[0]  # 64x64: turned upright it keeps its size
    ffmpeg("-i", str(phone), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(tmp_path / "turned.mp4"))
    shutil.move(tmp_path / "turned.mp4", phone)
    res = streamseg("train", "-D", "synth", "-M", "tsm_memtcn", "-E", "chunk32", "-R", str(tmp_path / "exp"),
                    *TINY_STREAM, "-o", f"data.root={root}", "-o", "train.num_workers=0")
    assert res.returncode == 0, res.stderr[-3000:]
    notes = list((tmp_path / "exp").rglob("footage.txt"))
    assert len(notes) == 1, notes
    assert notes[0].parent.name == "config"
    assert notes[0].read_text().splitlines() == [
        f"{phone}: rotated 90 degrees (display matrix): frames are turned upright"]


def test_a_half_turned_clip_gives_the_base_planes_turned(clips, tmp_path) -> None:
    """rotate=180 goes through FFmpeg's hflip and vflip filters: the I420 planes, copied from the filtered
    frames' padded rows, are the base clip's turned by half a turn."""
    rot = tmp_path / "rot180.mp4"
    ffmpeg("-i", str(clips["base.mp4"]), "-c", "copy", "-metadata:s:v:0", "rotate=180", str(rot))
    with VideoFileSource(rot, pixel_path="i420") as turned:
        planes = unpack_i420(read_all(turned))
        assert turned.rotation == 180
    with VideoFileSource(clips["base.mp4"], pixel_path="i420") as base:
        base_planes = unpack_i420(read_all(base))
    assert len(planes[0]) == len(base_planes[0]) > 0
    for plane, base_plane in zip(planes, base_planes):
        np.testing.assert_array_equal(plane.numpy(), np.rot90(base_plane.numpy(), 2, axes=(1, 2)))
