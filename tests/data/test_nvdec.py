"""NVDEC decoding (data.decoder=nvdec): the NV12 repacking, the same sampled frames as PyAV's I420 path,
the fallback and error behaviour before training, and (on a GPU) bit-exact planes against PyAV.

Without a GPU, PyNvVideoCodec is replaced by a fake module (`fake_nvc`) whose decoder decodes with PyAV
and hands out NV12 frames as the real one does (DLPack tensors of ``(H*3/2, W)``), and that refuses files
whose name contains ``unsupported``, as the real one refuses a codec or profile NVDEC lacks."""

from __future__ import annotations

import re
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from streamseg.config import ConfigError
from streamseg.data.errors import DataError
from streamseg.data.nvdec import EXTRA, NvdecSource, NvdecUnavailable, nv12_to_i420, nvdec_plan
from streamseg.data.nvdec import _ffmpeg_cuda as _real_ffmpeg_cuda
from streamseg.data.video import VideoFileSource, i420_frames


def _clip(path: Path, n: int, size=(48, 64), codec: str = "mpeg4") -> Path:
    """A clip of ``n`` frames of moving noise-free texture (every frame different)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.stack([(xx * 4 + i * 7) % 256, (yy * 5 + i * 3) % 256, ((xx + yy) * 2 + i * 11) % 256], -1)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")))
        out.mux(stream.encode())
    return path


def _nv12(frame: av.VideoFrame) -> torch.Tensor:
    """A yuv420p frame's planes as NV12 (luma, then interleaved Cb Cr), built from its I420 array."""
    a = frame.to_ndarray()  # (H*3/2, W) I420
    h, w = frame.height, frame.width
    u = a[h : h + h // 4].reshape(h // 2, w // 2)
    v = a[h + h // 4 :].reshape(h // 2, w // 2)
    return torch.from_numpy(np.concatenate([a[:h], np.stack([u, v], -1).reshape(h // 2, w)]))


class _FakeDecoder:
    """PyNvVideoCodec.SimpleDecoder's sequential interface over PyAV (CPU tensors, NV12)."""

    calls: list[str] = []
    refuse: set[str] = set()  # paths refused besides names containing "unsupported"

    def __init__(self, path, gpu_id=0, cuda_stream=0, use_device_memory=True, output_color_type=None):
        if "unsupported" in Path(path).name or path in _FakeDecoder.refuse:
            raise RuntimeError("CUVID: codec not supported on this GPU")
        with av.open(path) as c:
            self._frames = [_nv12(f) for f in c.decode(video=0)]
        self._pos = 0
        _FakeDecoder.calls.append(path)

    def __len__(self):
        return len(self._frames)

    def get_batch_frames(self, n):
        out = self._frames[self._pos : self._pos + n]
        self._pos += len(out)
        return out


class _FakeThreaded(_FakeDecoder):
    """ThreadedDecoder's interface: a buffer size, and no more than that many frames a call."""

    def __init__(self, path, buffer_size, **kwargs):
        super().__init__(path, **kwargs)
        self.buffer_size = buffer_size

    def get_batch_frames(self, n):
        assert n <= self.buffer_size, "ThreadedDecoder refuses batches larger than its buffer"
        return super().get_batch_frames(n)


@pytest.fixture
def fake_nvc(monkeypatch):
    monkeypatch.setattr(_FakeDecoder, "refuse", set())
    monkeypatch.setattr(_FakeDecoder, "calls", [])
    module = types.SimpleNamespace(SimpleDecoder=_FakeDecoder, ThreadedDecoder=_FakeThreaded,
                                   OutputColorType=types.SimpleNamespace(NATIVE=0))
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", module)
    return module


class _FakeFfmpeg(_FakeDecoder):
    """`streamseg.data.nvdec._FfmpegDecoder`'s interface over PyAV's software decoder: frames as (luma,
    chroma) planes, each a view into a wider (pitched) buffer as FFmpeg's CUDA frames are."""

    closed: list[str] = []

    def __init__(self, path, device):
        super().__init__(str(path))
        self.path = path

    def get_batch_frames(self, n):
        out = []
        for nv12 in super().get_batch_frames(n):
            hx, w = nv12.shape
            h = hx * 2 // 3
            pitched = torch.zeros((hx, w + 16), dtype=torch.uint8)
            pitched[:, :w] = nv12
            out.append((pitched[:h, :w], pitched[h:, :w].unflatten(1, (w // 2, 2))))
        return out

    def close(self):
        _FakeFfmpeg.closed.append(str(self.path))


@pytest.fixture
def fake_ffmpeg(monkeypatch):
    """FFmpeg's NVDEC reader replaced by `_FakeFfmpeg`, this PyAV taken as having CUDA acceleration, and no
    PyNvVideoCodec at all (the ffmpeg reader must not need it)."""
    import streamseg.data.nvdec as nvdec

    monkeypatch.setattr(_FakeDecoder, "refuse", set())
    monkeypatch.setattr(_FakeDecoder, "calls", [])
    monkeypatch.setattr(_FakeFfmpeg, "closed", [])
    monkeypatch.setattr(nvdec, "_FfmpegDecoder", _FakeFfmpeg)
    monkeypatch.setattr(nvdec, "_ffmpeg_cuda", lambda: None)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)


@pytest.fixture
def no_nvc(monkeypatch):
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)  # import raises ImportError


def test_nv12_to_i420_is_ffmpegs_i420_layout(tmp_path):
    clip = _clip(tmp_path / "v.mp4", 3)
    with av.open(str(clip)) as c:
        frames = list(c.decode(video=0))
    nv12 = torch.stack([torch.from_numpy(f.reformat(format="nv12").to_ndarray()) for f in frames])  # swscale's NV12
    assert torch.equal(nv12_to_i420(nv12), i420_frames(frames))


@pytest.mark.parametrize(("sample_rate", "chunks", "threads", "threaded"),
                         [(1, [8, 8, 8, 8, 8], 0, True), (3, [4, 5, 4, 4], 2, True), (25, [1, 1], 1, False)])
def test_nvdec_source_reads_the_pyav_frames_in_chunks(tmp_path, fake_nvc, sample_rate, chunks, threads, threaded,
                                                      monkeypatch):
    import streamseg.data.nvdec as nvdec

    monkeypatch.setattr(nvdec, "AHEAD", 7)  # several decoder calls per chunk
    clip = _clip(tmp_path / "v.mp4", 37)
    pool = ThreadPoolExecutor(threads) if threads else None
    with VideoFileSource(clip, sample_rate, pixel_path="i420") as ref, \
            NvdecSource(clip, (48, 64), sample_rate, device="cpu", pool=pool, threaded=threaded) as nv:
        got = [nv.read(n) for n in chunks]
        want = [ref.read(n) for n in chunks]
    assert [len(g) for g in got] == [len(w) for w in want] and sum(len(w) for w in want) == -(-37 // sample_rate)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert NvdecSource.opens[str(clip)] >= 1 and _FakeDecoder.calls.count(str(clip)) == NvdecSource.opens[str(clip)]


@pytest.mark.parametrize(("sample_rate", "chunks", "threads"), [(1, [8, 8, 8, 8, 8], 2), (3, [4, 5, 4, 4], 0)])
def test_the_ffmpeg_reader_reads_the_pyav_frames_in_chunks(tmp_path, fake_ffmpeg, sample_rate, chunks, threads):
    # FFmpeg's frames come as two pitched planes: repacked as I420 they equal PyAV's software planes; the
    # reader needs no PyNvVideoCodec (the fixture removes it) and closes FFmpeg's decoder with itself
    clip = _clip(tmp_path / "v.mp4", 37)
    pool = ThreadPoolExecutor(threads) if threads else None
    with VideoFileSource(clip, sample_rate, pixel_path="i420") as ref, \
            NvdecSource(clip, (48, 64), sample_rate, device="cpu", pool=pool, reader="ffmpeg") as nv:
        got = [nv.read(n) for n in chunks]
        want = [ref.read(n) for n in chunks]
    assert [len(g) for g in got] == [len(w) for w in want] and sum(len(w) for w in want) == -(-37 // sample_rate)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert _FakeFfmpeg.closed == [str(clip)]
    with pytest.raises(ValueError, match=r"NVDEC reader must be one of \('simple', 'threaded', 'ffmpeg'\), got 'cuvid'"):
        NvdecSource(clip, (48, 64), 1, device="cpu", reader="cuvid")


def test_planes_to_i420_refuses_planes_that_are_not_8_bit_4_2_0():
    from streamseg.data.nvdec import _plane_tensor

    luma, cbcr = torch.zeros((4, 6), dtype=torch.uint8), torch.zeros((2, 3, 2), dtype=torch.uint8)
    assert _plane_tensor((luma, cbcr), (4, 6)) == (luma, cbcr)
    with pytest.raises(ValueError, match=r"torch.int16 \(4, 6\).*not 8-bit 4:2:0 NV12 \(4, 6\)"):  # 10-bit: P010
        _plane_tensor((luma.short(), cbcr.short()), (4, 6))
    with pytest.raises(ValueError, match=r"\(4, 6, 2\), not 8-bit 4:2:0"):  # 4:4:4 chroma
        _plane_tensor((luma, torch.zeros((4, 6, 2), dtype=torch.uint8)), (4, 6))


def test_the_ffmpeg_reader_plans_like_the_others_and_names_what_is_missing(tmp_path, fake_ffmpeg, monkeypatch):
    import streamseg.data.nvdec as nvdec

    good, bad = _clip(tmp_path / "a.mp4", 5), _clip(tmp_path / "b_unsupported.mp4", 5)
    with pytest.warns(UserWarning, match=r"b_unsupported\.mp4: NVDEC cannot decode it.*decoding it with PyAV"):
        assert nvdec_plan([good, bad], (48, 64), fallback=True, reader="ffmpeg") == (True, {str(bad)})
    assert _FakeFfmpeg.closed == [str(good)]  # the trial decoder of each file it opened is closed
    with pytest.raises(DataError, match=r"a\.mp4: .*not 8-bit 4:2:0 NV12"):
        nvdec_plan([good], (32, 64), fallback=False, reader="ffmpeg")
    # a PyAV whose FFmpeg has no CUDA acceleration: the real check, with the device list of such a build
    monkeypatch.setattr(nvdec, "_ffmpeg_cuda", _real_ffmpeg_cuda)
    monkeypatch.setattr("av.codec.hwaccel.hwdevices_available", lambda: ["vaapi"])
    with pytest.raises(NvdecUnavailable, match=r"nvdec_reader=ffmpeg needs a PyAV whose FFmpeg has CUDA .*has: vaapi\)"):
        nvdec_plan([good], (48, 64), fallback=False, reader="ffmpeg")
    with pytest.warns(UserWarning, match=r"has: vaapi\).*decoding every video with PyAV"):
        assert nvdec_plan([good], (48, 64), fallback=True, reader="ffmpeg") == (False, set())
    # an older PyAV whose hardware frames cannot stay on the GPU
    monkeypatch.setattr("av.video.plane.VideoPlane", type("OldPlane", (), {}))
    with pytest.raises(NvdecUnavailable, match=r"keeps decoded frames on the GPU \(PyAV >= 18; this is .*pip install -U av"):
        nvdec_plan([good], (48, 64), fallback=False, reader="ffmpeg")


def test_plan_falls_back_per_file_with_a_warning_or_fails_naming_it(tmp_path, fake_nvc):
    good, bad = _clip(tmp_path / "a.mp4", 5), _clip(tmp_path / "b_unsupported.mp4", 5)
    with pytest.warns(UserWarning, match=r"b_unsupported\.mp4: NVDEC cannot decode it.*decoding it with PyAV"):
        assert nvdec_plan([good, bad], (48, 64), fallback=True) == (True, {str(bad)})
    with pytest.raises(DataError, match=r"b_unsupported\.mp4: NVDEC cannot decode it.*decoder_fallback=false"):
        nvdec_plan([good, bad], (48, 64), fallback=False)
    with pytest.raises(DataError, match=r"a\.mp4: .*not 8-bit 4:2:0 NV12"):  # frames of another size/layout
        nvdec_plan([good], (32, 64), fallback=False)


def test_plan_without_pynvvideocodec_names_the_extra(tmp_path, no_nvc):
    clip = _clip(tmp_path / "a.mp4", 5)
    with pytest.warns(UserWarning, match=rf"pip install {re.escape(repr(EXTRA))}.*decoding every video with PyAV"):
        assert nvdec_plan([clip], (48, 64), fallback=True) == (False, set())
    with pytest.raises(NvdecUnavailable, match=rf"data.decoder=nvdec needs PyNvVideoCodec: pip install {re.escape(repr(EXTRA))}"):
        nvdec_plan([clip], (48, 64), fallback=False)


def _dm(root, decoder: str, fallback: bool = True, preprocess: str = "device-i420", reader: str = "simple"):
    from streamseg.engine import VideoStreamDataModule

    dm = VideoStreamDataModule(str(root), 1, chunk_size=6, frame_size=(16, 16), batch_size=2, seed=0,
                               bg_classes=("background",), preprocess=preprocess, decoder=decoder,
                               decoder_fallback=fallback, nvdec_reader=reader)
    dm.setup()
    return dm


@pytest.mark.parametrize("reader", ["simple", "ffmpeg"])
def test_nvdec_training_batches_equal_the_pyav_workers(synth_video_root, request, monkeypatch, reader):
    """The NVDEC loader (main process, decode-ahead threads, frames written into the batch) yields the
    PyAV loader's batches, byte for byte, with one file (refused by NVDEC) falling back to PyAV; through
    PyNvVideoCodec's reader and through FFmpeg's (data.nvdec_reader=ffmpeg)."""
    from streamseg.engine import VideoStreamDataModule

    request.getfixturevalue("fake_ffmpeg" if reader == "ffmpeg" else "fake_nvc")
    # the fake decodes to CPU tensors: so does the loader, also where a GPU is present
    monkeypatch.setattr(VideoStreamDataModule, "_device", lambda self: torch.device("cpu"))
    root = synth_video_root
    videos = sorted((root / "Videos").iterdir())
    _FakeDecoder.refuse = {str(videos[0])}
    with pytest.warns(UserWarning, match=rf"{videos[0].name}: NVDEC cannot decode"):
        nv = _dm(root, "nvdec", reader=reader)
    assert nv.nvdec and nv.pyav_files == {str(videos[0])}
    ref = _dm(root, "pyav")
    _FakeDecoder.calls.clear()
    batches = list(zip(ref.train_dataloader(), nv.train_dataloader()))
    assert len(batches) == len(ref.train_dataloader())
    for a, b in batches:
        assert a["names"] == b["names"] and torch.equal(a["labels"], b["labels"]) and torch.equal(a["aug"], b["aug"])
        assert torch.equal(a["x"], b["x"])
    assert str(videos[0]) not in _FakeDecoder.calls and len(set(_FakeDecoder.calls)) >= 3


def test_nvdec_keys_fail_before_training_with_one_line_errors(synth_video_root, no_nvc, monkeypatch):
    with pytest.raises(ConfigError, match="needs data.preprocess=device-i420"):
        _dm(synth_video_root, "nvdec", preprocess="device-rgb")
    with pytest.raises(ConfigError, match=re.escape(f"pip install {EXTRA!r}")):
        _dm(synth_video_root, "nvdec", fallback=False)
    with pytest.warns(UserWarning, match=re.escape(f"pip install {EXTRA!r}")):
        assert not _dm(synth_video_root, "nvdec").nvdec  # falls back to the PyAV workers


@pytest.mark.gpu
@pytest.mark.parametrize("size", [(240, 320), (720, 1280)])
def test_nvdec_planes_are_bit_exact_against_pyav_on_h264(tmp_path, size):
    """Real NVDEC on synthetic H.264 (libx264, yuv420p): the 4:2:0 planes equal PyAV's exactly (tolerance 0:
    no colour conversion happens on either side), frame for frame, at sample rates 1 and 2, through both
    PyNvVideoCodec decoders."""
    pytest.importorskip("PyNvVideoCodec")
    clip = _clip(tmp_path / "v.mp4", 75, size, codec="libx264")
    assert nvdec_plan([clip], size, fallback=False) == (True, set())
    pool = ThreadPoolExecutor(2)
    for sample_rate, reader in ((1, "threaded"), (2, "threaded"), (2, "simple")):
        with VideoFileSource(clip, sample_rate, pixel_path="i420") as ref, \
                NvdecSource(clip, size, sample_rate, device="cuda", pool=pool, reader=reader) as nv:
            for n in (32, 32, 32):
                want, got = ref.read(n), nv.read(n)
                assert got.is_cuda and got.shape == want.shape
                assert torch.equal(got.cpu(), want), f"sample_rate {sample_rate}: planes differ"


@pytest.mark.gpu
@pytest.mark.parametrize("size", [(240, 320), (720, 1280)])
def test_ffmpegs_nvdec_planes_are_bit_exact_against_pyav_on_h264(tmp_path, size):
    """Real NVDEC through FFmpeg (data.nvdec_reader=ffmpeg; PyAV's CUDA acceleration, no PyNvVideoCodec):
    the 4:2:0 planes equal PyAV's software decoding exactly, at sample rates 1 and 3, with and without the
    decode-ahead pool, and a file is planned for NVDEC."""
    clip = _clip(tmp_path / "v.mp4", 75, size, codec="libx264")
    assert nvdec_plan([clip], size, fallback=False, reader="ffmpeg") == (True, set())
    pool = ThreadPoolExecutor(2)
    for sample_rate, with_pool in ((1, True), (3, True), (1, False)):
        with VideoFileSource(clip, sample_rate, pixel_path="i420") as ref, \
                NvdecSource(clip, size, sample_rate, device="cuda", pool=pool if with_pool else None,
                            reader="ffmpeg") as nv:
            for n in (32, 32, 32):
                want, got = ref.read(n), nv.read(n)
                assert got.is_cuda and got.shape == want.shape
                assert torch.equal(got.cpu(), want), f"sample_rate {sample_rate}: planes differ"


@pytest.mark.gpu
def test_the_ffmpeg_reader_opens_after_torch_made_the_cuda_context(tmp_path):
    """The usual order in a run: torch initialises CUDA (the model, the trainer) before any video opens.
    FFmpeg must then share torch's context, not ask for the primary context with its own flags (which
    failed with EOPNOTSUPP). A fresh process, so that no earlier test made the context first."""
    import subprocess

    clip = _clip(tmp_path / "v.mp4", 40, (240, 320), codec="libx264")
    code = ("import torch, sys; torch.zeros(1, device='cuda'); torch.cuda.synchronize()\n"
            "from concurrent.futures import ThreadPoolExecutor\n"
            "from streamseg.data.nvdec import NvdecSource, nvdec_plan\n"
            "assert nvdec_plan([sys.argv[1]], (240, 320), fallback=False, reader='ffmpeg') == (True, set())\n"
            "pool = ThreadPoolExecutor(2)\n"
            "with NvdecSource(sys.argv[1], (240, 320), 1, 'cuda', pool=pool, reader='ffmpeg') as nv:\n"
            "    nv.prefetch(16)\n"
            "    print(sum(len(nv.read(16)) for _ in range(4)))\n")
    got = subprocess.run([sys.executable, "-c", code, str(clip)], capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout.split()[-1] == "40"


@pytest.mark.parametrize("n", [5, 8, 12])
def test_a_prefetched_nvdec_source_reads_the_same_frames(tmp_path, fake_nvc, n):
    # `prefetch` (a video opened ahead by StreamBatcher.open_pool) decodes the first chunk in the pool; reads
    # afterwards, of that size or another, give the frames a plain reader gives
    clip = _clip(tmp_path / "v.mp4", 21)
    pool = ThreadPoolExecutor(2)
    with VideoFileSource(clip, 1, pixel_path="i420") as ref, \
            NvdecSource(clip, (48, 64), 1, device="cpu", pool=pool) as nv:
        nv.prefetch(8)
        assert nv._ahead is not None
        got = [nv.read(n) for _ in range(-(-21 // n))]
        want = [ref.read(n) for _ in range(-(-21 // n))]
    assert all(torch.equal(g, w) for g, w in zip(got, want)) and sum(len(g) for g in got) == 21
