"""Frame sources: order and sampling, one open per file, errors that name the file and the frame."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from streamseg.data.errors import DataError
from streamseg.data.video import (
    FeatureSource,
    FrameFolderSource,
    VideoFileSource,
    open_source,
    probe,
    yuv420p_to_rgb,
)

SIDE = 32  # frame side in pixels; two 16-px halves match mpeg4's 16x16 macroblocks


def index_image(i: int) -> np.ndarray:
    """A grey frame encoding ``i``: left half (i % 16), right half (i // 16), 16 grey levels apart."""
    img = np.empty((SIDE, SIDE, 3), np.uint8)
    img[:, : SIDE // 2] = (i % 16) * 16 + 8
    img[:, SIDE // 2 :] = (i // 16) * 16 + 8
    return img


def decode_index(frames: torch.Tensor) -> list[int]:
    """Recover ``i`` from ``index_image(i)`` frames ``(n, 3, H, W)`` (any size: reads the halves' centres)."""
    w = frames.shape[-1]
    left = frames[:, :, :, 2 : w // 2 - 2].float().mean(dim=(1, 2, 3))
    right = frames[:, :, :, w // 2 + 2 : w - 2].float().mean(dim=(1, 2, 3))
    lo, hi = ((left - 8) / 16).round().long(), ((right - 8) / 16).round().long()
    return (hi * 16 + lo).tolist()


def write_clip(path: Path, n: int, fps: int = 25, options: dict | None = None) -> Path:
    with av.open(str(path), "w", options=options or {}) as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIDE, SIDE, "yuv420p"
        for i in range(n):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(index_image(i), format="rgb24")))
        out.mux(stream.encode())
    return path


def read_in_chunks(source, sizes: list[int]) -> list[torch.Tensor]:
    return [source.read(k) for k in sizes]


@pytest.mark.parametrize("sample_rate", [1, 3])
def test_video_frames_in_order_with_sample_rate(tmp_path, sample_rate):
    clip = write_clip(tmp_path / "v.mp4", 40)
    with VideoFileSource(clip, sample_rate=sample_rate) as source:
        assert (source.num_frames, source.fps) == (40, 25.0)
        chunks = read_in_chunks(source, [5, 5, 100, 5])
    got = [i for c in chunks for i in decode_index(c)]
    assert got == list(range(0, 40, sample_rate))
    assert [len(c) for c in chunks][:2] == [5, 5] and len(chunks[-1]) == 0
    assert chunks[0].dtype == torch.uint8 and chunks[0].shape[1:] == (3, SIDE, SIDE)


def test_video_resize_and_pixel_paths_agree(tmp_path):
    clip = write_clip(tmp_path / "v.mp4", 20)
    a = VideoFileSource(clip, size=(24, 40), pixel_path="rgb24").read(20)
    b = yuv420p_to_rgb(*unpack_i420(VideoFileSource(clip, pixel_path="i420").read(20)), size=(24, 40))
    assert a.shape == b.shape == (20, 3, 24, 40)
    assert decode_index(a) == decode_index(b) == list(range(20))
    # same colour matrix as swscale: grey frames agree to a few code values (rounding, chroma siting)
    assert (a.int() - b.int()).abs().float().mean() < 2.0


def test_yuv_matrix_limited_and_full_range():
    y = torch.tensor([16, 235, 126], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    u = v = torch.full((3, 1, 1), 128, dtype=torch.uint8)
    rgb = yuv420p_to_rgb(y, u, v)  # BT.601 limited range: 16 -> black, 235 -> white
    assert rgb[:, :, 0, 0].tolist() == [[0, 0, 0], [255, 255, 255], [128, 128, 128]]
    red = yuv420p_to_rgb(*(torch.tensor([[[v]]], dtype=torch.uint8) for v in (81, 90, 240)))
    assert (red[0, :, 0, 0].int() - torch.tensor([255, 0, 0])).abs().max() <= 2  # BT.601 (255, 0, 0)
    full = yuv420p_to_rgb(*(torch.tensor([[[v]]], dtype=torch.uint8) for v in (200, 128, 128)), full_range=True)
    assert full[0, :, 0, 0].tolist() == [200, 200, 200]


def write_rgb_clip(path: Path, codec: str, pix_fmt: str, height: int, width: int, n: int) -> Path:
    """A smooth colour gradient (chroma subsampling loses little) drifting 2 px per frame."""
    ys, xs = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(n):
            img = np.stack([(xs + 2 * i) * 3, ys * 5, 250 - (xs + ys) * 2], -1).clip(0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return path


def unpack_i420(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed ``(n, 1, H*3/2, W)`` -> Y ``(n, H, W)``, U and V ``(n, H/2, W/2)``."""
    n, _, rows, w = frames.shape
    h = rows * 2 // 3
    chroma = frames[:, 0, h:].reshape(n, 2, h // 2, w // 2)
    return frames[:, 0, :h], chroma[:, 0], chroma[:, 1]


@pytest.mark.parametrize("sample_rate", [1, 3])
def test_i420_pixel_path_is_ffmpegs_packed_yuv420p_layout(tmp_path, sample_rate):
    clip = write_clip(tmp_path / "v.mp4", 20)
    with av.open(str(clip)) as container:  # PyAV's own packing (rows padded to line_size are dropped)
        want = np.stack([f.to_ndarray(format="yuv420p") for f in container.decode(video=0)])[::sample_rate]
    with VideoFileSource(clip, sample_rate=sample_rate, pixel_path="i420") as source:
        assert source.out_size == (SIDE, SIDE) and source.colour == (2, False)  # mpeg4: BT.601 limited
        chunks = read_in_chunks(source, [4, 100, 4])
    assert chunks[0].shape == (4, 1, SIDE * 3 // 2, SIDE) and chunks[0].dtype == torch.uint8
    assert chunks[-1].shape == (0, 1, SIDE * 3 // 2, SIDE)
    got = torch.cat(chunks)
    np.testing.assert_array_equal(got[:, 0].numpy(), want)
    rgb = yuv420p_to_rgb(*unpack_i420(got))  # and the planes are the frames, in order
    assert decode_index(rgb) == list(range(0, 20, sample_rate))


def test_i420_converts_other_pixel_formats_and_reports_their_colour(tmp_path):
    # an RGB source (FFV1 bgr0) is converted to yuv420p by swscale: BT.601 limited range
    clip = write_rgb_clip(tmp_path / "rgb.mkv", "ffv1", "bgr0", 24, 40, 3)
    with VideoFileSource(clip, pixel_path="i420") as source:
        packed = source.read(3)
        assert source.colour == (2, False)
    rgb = VideoFileSource(clip).read(3)
    back = yuv420p_to_rgb(*unpack_i420(packed), colorspace=2, full_range=False)
    assert (back.int() - rgb.int())[..., 2:-2, 2:-2].abs().float().mean() < 2.0  # away from the border
    # yuvj420p (MJPEG) keeps its planes as they are and says they are full range
    jpeg = write_rgb_clip(tmp_path / "j.avi", "mjpeg", "yuvj420p", 24, 40, 3)
    with VideoFileSource(jpeg, pixel_path="i420") as source:
        packed = source.read(3)
        assert source.colour[1] is True
    back = yuv420p_to_rgb(*unpack_i420(packed), colorspace=source.colour[0], full_range=True)
    rgb = VideoFileSource(jpeg).read(3)
    assert (back.int() - rgb.int())[..., 2:-2, 2:-2].abs().float().mean() < 3.0


def test_i420_rejects_odd_sizes_and_a_resize(tmp_path):
    odd = write_rgb_clip(tmp_path / "odd.mkv", "ffv1", "bgr0", 25, 40, 2)
    with pytest.raises(DataError, match=r"odd\.mkv: pixel_path='i420' needs an even frame height and width.*25x40"):
        VideoFileSource(odd, pixel_path="i420")
    clip = write_clip(tmp_path / "v.mp4", 2)
    with pytest.raises(DataError, match=r"v\.mp4: pixel_path='i420' returns frames at the native size"):
        VideoFileSource(clip, size=(16, 16), pixel_path="i420")
    for dropped in ("nv12", "yuv420p"):  # the CPU torch colour path is gone: swscale converts better
        with pytest.raises(DataError, match="pixel_path must be one of"):
            VideoFileSource(clip, pixel_path=dropped)


@pytest.mark.parametrize("threads", [1, 3])
def test_decode_threads_set_the_decoder_and_keep_the_frames(tmp_path, threads):
    """``decode_threads`` sets FFmpeg's decoder threads (1: none beside the caller's; n: frame threading)
    before the codec opens; the frames are those of PyAV's default decoder, in order."""
    clip = write_rgb_clip(tmp_path / "v.mp4", "libx264", "yuv420p", 32, 48, 30)
    with VideoFileSource(clip, pixel_path="i420") as source:
        want = torch.cat(read_in_chunks(source, [7, 100]))
    with VideoFileSource(clip, pixel_path="i420", decode_threads=threads) as source:
        context = source._container.streams.video[0].codec_context
        assert context.thread_count == threads
        assert (context.thread_type.value == 0) == (threads == 1)  # ThreadType.NONE: no frame or slice threads
        got = torch.cat(read_in_chunks(source, [7, 100]))
    assert len(want) == 30 and torch.equal(got, want)
    with pytest.raises(DataError, match=r"v\.mp4: decode_threads must be an int >= 0, got -1"):
        VideoFileSource(clip, decode_threads=-1)


def test_video_opened_once_per_source(tmp_path):
    clip = write_clip(tmp_path / "v.mp4", 12)
    before = VideoFileSource.opens[str(clip)]
    with VideoFileSource(clip, sample_rate=2) as source:
        while len(source.read(2)):
            pass
    assert VideoFileSource.opens[str(clip)] - before == 1


def test_truncated_file_raises_naming_file(tmp_path):
    clip = write_clip(tmp_path / "v.mp4", 30)  # moov atom at the end: a cut file cannot be opened
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size * 6 // 10])
    with pytest.raises(DataError, match="cut.mp4"):
        VideoFileSource(cut)
    with pytest.raises(DataError, match="cut.mp4"):
        probe(cut)


def test_truncated_faststart_file_raises_naming_file_and_frame(tmp_path):
    # moov atom first: the cut file opens, and decoding ends early, with an FFmpeg error or without one;
    # then the header's duration, not its frame count alone (a stream-copy trim has fewer frames than
    # its count too), reveals the truncation
    clip = write_clip(tmp_path / "v.mp4", 30, options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size * 6 // 10])
    source = VideoFileSource(cut)
    assert source.num_frames == 30
    with pytest.raises(DataError, match=r"cut\.mp4: (decoding failed at frame \d+|the file ends at .* \(\d+ of 30 "
                                        r"frames\): cut short)"):
        while len(source.read(4)):
            pass


def test_corrupt_packet_raises_naming_file_and_frame(tmp_path):
    clip = write_clip(tmp_path / "v.mp4", 30, options={"movflags": "faststart"})
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"bad\.mp4: (decoding failed at frame \d+|the file ends at .*cut short)"):
        with VideoFileSource(bad) as source:
            while len(source.read(8)):
                pass


def test_probe(tmp_path):
    clip = write_clip(tmp_path / "v.mp4", 17, fps=15)
    assert probe(clip) == (17, 15.0, SIDE, SIDE)
    with pytest.raises(DataError, match="missing.mp4: video file not found"):
        probe(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(DataError, match="notes.mp4"):
        probe(text)


def write_frames(folder: Path, n: int, pattern: str = "img_%05d.jpg", start: int = 1) -> Path:
    import torchvision.io as tvio

    folder.mkdir()
    for i in range(n):
        image = torch.from_numpy(index_image(i)).permute(2, 0, 1).contiguous()
        tvio.write_jpeg(image, str(folder / (pattern % (start + i))), quality=95)
    return folder


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_frame_folder_in_order_with_sample_rate_and_resize(tmp_path):
    folder = write_frames(tmp_path / "frames", 11)
    source = open_source(folder, sample_rate=2, size=(16, 48))
    assert isinstance(source, FrameFolderSource) and source.num_frames == 11
    chunks = read_in_chunks(source, [4, 4, 4])
    assert [c.shape[0] for c in chunks] == [4, 2, 0]
    assert chunks[0].shape[1:] == (3, 16, 48)
    assert [i for c in chunks for i in decode_index(c)] == [0, 2, 4, 6, 8, 10]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_frame_folder_gap_names_missing_file(tmp_path):
    folder = write_frames(tmp_path / "frames", 5)
    (folder / "img_00003.jpg").unlink()
    with pytest.raises(DataError, match="img_00003.jpg: frame missing"):
        FrameFolderSource(folder)


def test_feature_source_slices_with_sample_rate(tmp_path):
    features = np.arange(4 * 10, dtype=np.float64).reshape(4, 10)  # (D, T)
    np.save(tmp_path / "f.npy", features)
    source = open_source(tmp_path / "f.npy", sample_rate=3)
    assert isinstance(source, FeatureSource) and (source.dim, source.num_frames) == (4, 10)
    chunks = read_in_chunks(source, [2, 2, 2])
    assert [tuple(c.shape) for c in chunks] == [(2, 4), (2, 4), (0, 4)]
    assert chunks[0].dtype == torch.float32
    np.testing.assert_array_equal(torch.cat(chunks).numpy(), features[:, ::3].T)


def test_feature_source_rejects_wrong_shape(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match=r"f\.npy: features must be 2-D"):
        FeatureSource(tmp_path / "f.npy")


def test_read_sampled_keeps_every_sample_rate_th_original_frame_and_says_why_it_stopped():
    """The one PyAV read loop (training's VideoFileSource and deploy's StreamSource both call it): frames
    here are the original indices, so what is kept and where it stops is plain to see."""
    from streamseg.data.video import read_sampled

    decoder = iter(range(10))
    seen = []
    got = read_sampled(decoder, 2, 3, 0, on_frame=seen.append)
    assert got == ([0, 3], 4, None) and seen == [0, 1, 2, 3]  # stops right after the n-th kept frame
    got = read_sampled(decoder, 5, 3, got.next_index, limit=8, on_frame=seen.append)
    assert got == ([6], 8, "limit") and seen == list(range(8))  # frame 8 is never decoded
    got = read_sampled(decoder, 5, 3, got.next_index)
    assert got == ([9], 10, "end")
