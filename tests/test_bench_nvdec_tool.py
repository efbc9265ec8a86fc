"""tools/bench_nvdec.py's CPU-side parts: the utilisation sampler (a stand-in ``nvidia-smi`` on PATH) and
the clips' bit rate. The decoding itself needs a GPU with NVDEC (run by hand, docs/benchmarks.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_nvdec  # noqa: E402
from bench_gpu import make_clip  # noqa: E402


def test_utilisation_averages_the_samples_of_a_span(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "nvidia-smi"
    # decoder 80 % then 40 %, GPU 10 %, a sample every 50 ms, with a line nvidia-smi prints for a missing value
    fake.write_text("#!/bin/sh\necho '[N/A], 3'\nwhile true; do echo '80, 10'; sleep 0.05; echo '40, 10'; "
                    "sleep 0.05; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    with bench_nvdec.Utilisation() as util:
        start = time.time()
        time.sleep(1.0)
        end = time.time()
    got = util.within(start, end)
    assert got["util_samples"] >= 8 and got["decoder_util_max"] == 80.0 and got["gpu_util_mean"] == 10.0
    assert 50 <= got["decoder_util_mean"] <= 70
    assert util.within(end + 10, end + 20) == {"util_samples": 0}
    assert util.proc.poll() is not None  # the sampler stopped with the block


def test_bit_rate_is_megabits_per_second_of_video(tmp_path) -> None:
    clips = []
    for i, size in enumerate((30_000, 90_000)):
        clips.append(tmp_path / f"c{i}.mp4")
        clips[-1].write_bytes(b"\0" * size)
    # 120 000 bytes over 2 clips of 60 frames at 30 fps (4 s of video): 0.24 Mbit/s
    assert bench_nvdec.bit_rate_mbps([str(c) for c in clips], 60) == 0.24


@pytest.mark.gpu
@pytest.mark.parametrize("layer", ["ffmpeg", "raw"])
def test_each_layer_decodes_every_frame_of_a_clip_on_the_gpu(tmp_path, layer) -> None:
    # the "ffmpeg" layer (FFmpeg's NVDEC through PyAV, frames left in GPU memory) and the "raw" one count the
    # frames PyAV's software decoder gives; the ffmpeg layer refuses frames that did not stay on the GPU
    import threading

    import av

    if layer == "raw":
        pytest.importorskip("PyNvVideoCodec")
    clip = str(tmp_path / "c.mp4")
    make_clip(clip, 240, 320, 45, 0)
    with av.open(clip) as c:
        want = sum(1 for _ in c.decode(video=0))
    out: dict = {}
    bench_nvdec._decode(clip, (240, 320), layer, threading.Barrier(1), out)
    assert out["frames"] == want == 45 and out["end"] >= out["start"]
