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


@pytest.mark.parametrize("spec, decode", [
    (EncoderSpec("s3d", mode="dense", chunk=8, overlap=4, size=(32, 32)), "rgb24"),  # overlapping; last padded
    (EncoderSpec("s3d", mode="dense", chunk=8, overlap=4, size=(32, 32)), "i420"),  # converted after the hand-over
    (EncoderSpec("s3d", mode="window", window=8, batch=8, size=(32, 32)), "rgb24"),
    (EncoderSpec("mobilenet_v2", batch=8, size=(32, 32)), "rgb24"),
], ids=lambda p: f"{p.encoder}-{p.mode}" if isinstance(p, EncoderSpec) else p)
def test_worker_decoding_gives_the_in_process_features_bit_for_bit(videos, tmp_path, spec, decode):
    before = _run(videos, tmp_path / "thread", spec, decode=decode)
    after = _run(videos, tmp_path / "workers", spec, decode=decode, decode_workers=2)
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


def test_more_workers_than_videos_pad_only_the_last_run_and_report_where_the_time_went(videos, tmp_path):
    """Segments of different videos share runs, so padding is needed only once, at the very end (a run padded
    at every video's end wastes the device); more workers than videos (5 for 3) are not an error."""
    spec = EncoderSpec("thumbnail", batch=4)  # 4 frames a segment, no context
    report = extract_features(videos, tmp_path / "out", spec, decode_workers=5, segment_batch=3)
    assert not report.failed and sorted(report.done) == sorted(LENGTHS)
    segments = sum(-(-n // 4) for n in LENGTHS.values())  # 6 + 3 + 10 = 19
    t = report.timing
    assert (t["runs"], t["padded"]) == (-(-segments // 3), 3 * -(-segments // 3) - segments) == (7, 2)
    assert 0 < t["first_block_s"] <= t["seconds"] and 0 <= t["input_wait_s"] <= t["seconds"]
    assert 0 < t["network_s"] < t["seconds"] and 0 < t["prepare_s"] < t["seconds"]
    again = extract_features(videos, tmp_path / "out", spec, decode_workers=5, segment_batch=3)  # resumed: no work
    assert sorted(again.skipped) == sorted(LENGTHS) and again.timing == {}
    plain = extract_features(videos, tmp_path / "plain", spec)
    assert plain.timing == {}  # the in-process path has no pipeline to break down
    for name in LENGTHS:
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"{name}.npy"),
                                   np.load(tmp_path / "plain" / f"{name}.npy"), rtol=0, atol=1e-6)


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
    report = extract_features(videos, tmp_path / "workers", spec, device="cuda", decode_workers=2, segment_batch=2)
    assert not report.failed
    after = {p.stem: np.load(p) for p in (tmp_path / "workers").glob("*.npy")}
    for name in LENGTHS:
        scale = float(np.abs(before[name]).max())
        np.testing.assert_allclose(after[name], before[name], rtol=0, atol=1e-3 * scale)
    i420 = _run(videos, tmp_path / "i420", spec, device="cuda", decode="i420", decode_workers=2, segment_batch=1)
    plain_i420 = _run(videos, tmp_path / "thread_i420", spec, device="cuda", decode="i420")
    for name in LENGTHS:  # the side-stream copy is waited for: a race would show as other bits
        np.testing.assert_array_equal(i420[name], plain_i420[name])
    t = report.timing  # CUDA events: the device's busy time, within the call's
    assert 0 < t["network_s"] < t["seconds"] and 0 < t["prepare_s"] < t["seconds"]


class _FakeEvent:
    """A CUDA event stand-in on a fake device whose progress the test sets: event i completes once
    `reached` > i; it 'took' one millisecond after the one before."""

    recorded = 0
    reached = 0

    def record(self) -> None:
        self.i = _FakeEvent.recorded
        _FakeEvent.recorded += 1

    def query(self) -> bool:
        return _FakeEvent.reached > self.i

    def elapsed_time(self, end: "_FakeEvent") -> float:
        assert self.query() and end.query(), "read before completion"
        return float(end.i - self.i)


def test_the_gpu_clock_releases_completed_events_without_waiting(monkeypatch):
    import torch

    from streamseg.extract.pipeline import _Clock

    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: setattr(_FakeEvent, "reached", _FakeEvent.recorded))
    monkeypatch.setattr(_Clock, "FOLD_EVERY", 16)
    _FakeEvent.recorded = _FakeEvent.reached = 0
    clock = _Clock(torch.device("cuda"), event=_FakeEvent)
    most = 0
    for run in range(1000):
        clock.stop("network_s", clock.start())
        _FakeEvent.reached = max(0, _FakeEvent.recorded - 20)  # the device runs 10 spans behind the host
        most = max(most, len(clock.spans["network_s"]))
    assert most <= 16 + 10  # bounded, not 1,000 spans of two events each
    assert clock.seconds() == {"network_s": pytest.approx(1000 * 1e-3)}  # each span 1 ms, all counted once
    assert clock.spans["network_s"] == []
