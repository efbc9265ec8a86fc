"""Extraction with decoding worker processes (`streamseg.extract.pipeline`): the same features as the in-process
path, bit for bit with one segment per network run, to float rounding with several; failures per video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamseg.extract import EncoderSpec, extract_features

from .test_extract_run import _write_video

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")

LENGTHS = {"p_a": 23, "p_b": 9, "p_c": 40}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pipeline")
    return [_write_video(folder / f"{name}.mp4", frames, seed) for seed, (name, frames) in enumerate(LENGTHS.items())]


def _run(videos, out: Path, spec: EncoderSpec, **kw) -> dict[str, np.ndarray]:
    report = extract_features(videos, out, spec, **kw)
    assert not report.failed, report.failed
    return {p.stem: np.load(p) for p in sorted(out.glob("*.npy"))}


@pytest.mark.parametrize("spec", [
    EncoderSpec("s3d", mode="dense", chunk=8, overlap=4, size=(32, 32)),  # segments overlap; the last is padded
    EncoderSpec("s3d", mode="window", window=8, batch=8, size=(32, 32)),
    EncoderSpec("mobilenet_v2", batch=8, size=(32, 32)),
], ids=lambda s: f"{s.encoder}-{s.mode}")
def test_worker_decoding_gives_the_in_process_features_bit_for_bit(videos, tmp_path, spec):
    before = _run(videos, tmp_path / "thread", spec)
    after = _run(videos, tmp_path / "workers", spec, decode_workers=2)
    assert sorted(after) == sorted(LENGTHS)
    for name in LENGTHS:
        assert after[name].shape == before[name].shape == (after[name].shape[0], LENGTHS[name])
        np.testing.assert_array_equal(after[name], before[name])


def test_several_segments_per_run_agree_to_rounding_and_i420_and_sample_rate_carry_over(videos, tmp_path):
    spec = EncoderSpec("s3d", mode="dense", chunk=8, overlap=4, size=(32, 32))
    before = _run(videos, tmp_path / "thread", spec, decode="i420", sample_rate=2)
    after = _run(videos, tmp_path / "workers", spec, decode="i420", sample_rate=2, decode_workers=2, segment_batch=3)
    for name in LENGTHS:
        assert after[name].shape == before[name].shape
        scale = float(np.abs(before[name]).max())
        np.testing.assert_allclose(after[name], before[name], rtol=0, atol=1e-4 * scale)


def test_a_bad_video_fails_alone_under_workers_from_the_command_line(videos, tmp_path, capsys):
    from streamseg.cli.main import main

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    out = tmp_path / "out"
    code = main(["extract", *map(str, videos), str(broken), "--encoder", "thumbnail", "--out", str(out),
                 "--decode-workers", "2", "--segment-batch", "2"])
    assert code == 1
    assert sorted(p.stem for p in out.glob("*.npy")) == sorted(LENGTHS)
    assert "broken.mp4" in capsys.readouterr().err


def test_workers_refuse_flow_and_bad_counts(videos, tmp_path):
    from streamseg.extract import FlowSpec

    with pytest.raises(ValueError, match="decode workers need a stateless encoder without flow"):
        extract_features(videos, tmp_path, EncoderSpec("s3d", size=(128, 128)), flow=FlowSpec("raft_small"),
                         decode_workers=2)
    with pytest.raises(ValueError, match="segment_batch must be an int >= 1"):
        extract_features(videos, tmp_path, EncoderSpec("thumbnail"), segment_batch=0)


@pytest.mark.gpu
def test_on_a_gpu_workers_pinned_copies_and_batched_runs_agree_with_the_in_process_path(videos, tmp_path):
    spec = EncoderSpec("s3d", mode="dense", chunk=8, overlap=4, size=(64, 64))
    before = _run(videos, tmp_path / "thread", spec, device="cuda")
    after = _run(videos, tmp_path / "workers", spec, device="cuda", decode_workers=2, segment_batch=2)
    for name in LENGTHS:
        scale = float(np.abs(before[name]).max())
        np.testing.assert_allclose(after[name], before[name], rtol=0, atol=1e-3 * scale)
