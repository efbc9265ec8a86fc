"""`streamseg extract` end to end on tiny mp4 files: shapes, manifest, resume, bad input, sharding."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from streamseg.cli.main import main
from streamseg.data.synth_render import encode_mp4
from streamseg.extract import EncoderSpec, FlowSpec, extract_features, list_videos, shard
from streamseg.extract.run import _atomic_write

from ..conftest import REPO

# module-wide, so the module fixtures run on one thread too (and float sums are the same in every run)
pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")

LENGTHS = {"cut_a": 17, "cut_b": 25, "cut_c": 9, "cut_d": 30}  # frames per video
FAST = ["--encoder", "mobilenet_v2", "--size", "32", "32", "--batch", "8"]


def _write_video(path: Path, frames: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    # smooth random content (so H.264 keeps it) that changes from frame to frame
    base = rng.integers(0, 256, (frames, 4, 4, 3)).astype(np.uint8)
    encode_mp4(path, np.repeat(np.repeat(base, 8, axis=1), 8, axis=2), 15)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("extract") / "ds"
    (root / "Videos").mkdir(parents=True)
    for seed, (name, frames) in enumerate(LENGTHS.items()):
        _write_video(root / "Videos" / f"{name}.mp4", frames, seed)
    return root


@pytest.fixture(scope="module")
def extracted(dataset) -> Path:
    """The image model's features of `dataset`, one process, default output folder."""
    assert main(["extract", str(dataset), *FAST]) == 0
    return dataset / "features"


def _close(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float rounding, relative to the array's scale (randomly initialised networks give tiny
    features, ~1e-10, where element-wise relative tolerances fail on near-cancellations)."""
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in sorted(folder.glob("*.npy"))}


def test_every_video_gets_d_by_frame_count_features_and_the_manifest_says_how(extracted):
    arrays = _arrays(extracted)
    assert {k: v.shape for k, v in arrays.items()} == {k: (1280, t) for k, t in LENGTHS.items()}
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in arrays.values())
    manifest = json.loads((extracted / "extract.json").read_text())
    assert manifest["spec"] == {"encoder": "mobilenet_v2", "weights": None, "seed": 0, "sample_rate": 1,
                                "size": [32, 32], "dim": 1280}
    assert manifest["videos"]["cut_b"] == {"frames": 25, "fps": 15.0}
    assert not list(extracted.glob(".*"))  # no temporary files left


def test_a_sample_rate_encodes_every_nth_frame_and_repeats_it_to_the_frame_count(dataset, extracted, tmp_path):
    report = extract_features([dataset / "Videos" / "cut_b.mp4"], tmp_path, EncoderSpec("mobilenet_v2", size=(32, 32)),
                              sample_rate=3)
    assert report.done == ["cut_b"]
    every, third = np.load(extracted / "cut_b.npy"), np.load(tmp_path / "cut_b.npy")
    assert third.shape == every.shape
    _close(third[:, ::3], every[:, ::3])  # the same frames, encoded
    np.testing.assert_array_equal(third[:, 1], third[:, 0])
    assert np.abs(third[:, 3] - third[:, 0]).max() > 1e-2 * np.abs(third).max()


def test_a_rerun_skips_finished_videos_and_an_interrupted_run_resumes(dataset, extracted, tmp_path):
    out, spec = tmp_path / "feats", EncoderSpec("mobilenet_v2", size=(32, 32), batch=8)

    def stop_after_first(event):
        if event["status"] == "done":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_features([dataset], out, spec, progress=stop_after_first)
    assert [p.name for p in out.glob("*.npy")] == ["cut_a.npy"]
    assert not list(out.glob(".*"))
    (out / ".cut_b.npy.999.tmp").write_bytes(b"half")  # what a SIGKILL during a write leaves
    events = []
    report = extract_features([dataset], out, spec, progress=events.append)
    assert report.skipped == ["cut_a"] and sorted(report.done) == ["cut_b", "cut_c", "cut_d"]
    assert [e["status"] for e in events] == ["skipped", "done", "done", "done"]
    assert not list(out.glob(".*"))  # the stale temporary file is gone
    assert events[-1]["eta_s"] == 0 and events[-1]["fps_rate"] > 0
    for name, array in _arrays(out).items():  # deterministic: the same weights (seed) and frames
        np.testing.assert_array_equal(array, np.load(extracted / f"{name}.npy"))
    assert extract_features([dataset], out, spec).skipped == sorted(LENGTHS)


def test_features_made_differently_do_not_mix(dataset, extracted, tmp_path, capsys):
    assert main(["extract", str(dataset), "--encoder", "mobilenet_v2", "--size", "48", "48"]) == 2
    err = capsys.readouterr().err
    assert "extract.json" in err and "size: [32, 32] there, [48, 48] now" in err
    foreign = tmp_path / "features"
    foreign.mkdir()
    np.save(foreign / "cut_a.npy", np.zeros((4, 17), np.float32))
    assert main(["extract", str(dataset), *FAST, "--out", str(foreign)]) == 2
    assert "no extract.json" in capsys.readouterr().err
    assert main(["extract", str(dataset / "Videos"), *FAST]) == 2  # a plain folder needs --out
    assert "--out is needed" in capsys.readouterr().err


def test_bad_videos_are_reported_by_name_and_the_others_finish(dataset, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = (dataset / "Videos" / "cut_c.mp4").read_bytes()
    (folder / "cut_c.mp4").write_bytes(good)
    (folder / "noise.mp4").write_bytes(os.urandom(2000))
    (folder / "truncated.mp4").write_bytes(good[: len(good) // 2])
    assert main(["extract", str(folder), *FAST, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "failed noise" in err and "failed truncated" in err and "noise.mp4" in err
    assert [p.name for p in (tmp_path / "out").glob("*.npy")] == ["cut_c.npy"]


def test_listed_names_must_be_plain_unique_file_names(dataset, tmp_path):
    lst = tmp_path / "videos.txt"
    lst.write_text(f"# my videos\n{dataset / 'Videos' / 'cut_a.mp4'}\n\n../ds/Videos/cut_b.mp4\n")
    (tmp_path / "ds").symlink_to(dataset)
    assert [n for n, _ in list_videos([lst])] == ["cut_a", "cut_b"]
    for line, problem in [(".hidden.mp4", "not a plain file name"), ("a\tb.mp4", "not a plain file name"),
                          (f"{dataset / 'Videos' / 'cut_a.mp4'}", "again")]:
        lst.write_text(f"{dataset / 'Videos' / 'cut_a.mp4'}\n{line}\n")
        with pytest.raises(ValueError, match=problem) as err:
            list_videos([lst])
        assert f"{lst}:2" in str(err.value)


def test_the_shard_plan_is_disjoint_complete_and_balanced(tmp_path):
    videos = []
    for i, size in enumerate([900, 100, 500, 400, 300, 200, 50]):
        (tmp_path / f"v{i}.mp4").write_bytes(b"x" * size)
        videos.append((f"v{i}", tmp_path / f"v{i}.mp4"))
    plans = [shard(videos, r, 3) for r in range(3)]
    names = [n for plan in plans for n, _ in plan]
    assert sorted(names) == sorted(n for n, _ in videos)  # every video exactly once
    loads = [sum((tmp_path / f"{n}.mp4").stat().st_size for n, _ in plan) for plan in plans]
    # largest first to the least loaded: 900 | 500 + 200 + 100 | 400 + 300 + 50 (a round robin by name: 1500 | 850 | 600)
    assert loads == [900, 800, 750]
    assert shard(videos, 0, 1) == sorted(videos)


def test_an_interrupted_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    def write_then_die(path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        _atomic_write(tmp_path / "v.npy", write_then_die)
    assert list(tmp_path.iterdir()) == []


def test_video_models_in_window_and_dense_mode_and_with_a_flow_stream(dataset, tmp_path):
    video = [dataset / "Videos" / "cut_c.mp4"]
    window = EncoderSpec("r2plus1d_18", size=(16, 16), mode="window", window=4, batch=16)
    dense = EncoderSpec("r2plus1d_18", size=(16, 16), mode="dense", chunk=8, overlap=4)
    assert extract_features(video, tmp_path / "w", window).done == ["cut_c"]
    assert extract_features(video, tmp_path / "d", dense).done == ["cut_c"]
    w, d = np.load(tmp_path / "w" / "cut_c.npy"), np.load(tmp_path / "d" / "cut_c.npy")
    assert w.shape == d.shape == (512, 9)
    spec = json.loads((tmp_path / "d" / "extract.json").read_text())["spec"]
    assert (spec["mode"], spec["chunk"], spec["overlap"]) == ("dense", 8, 4)

    # RAFT needs >= 128 x 128 frames: a 4-frame video keeps the two-stream run to one network run per stream
    short = [_write_video(tmp_path / "short.mp4", 4, seed=9)]
    flow = FlowSpec("raft_small", updates=1)
    big = EncoderSpec("r2plus1d_18", size=(128, 128), mode="dense", chunk=4, overlap=0)
    assert not extract_features(short, tmp_path / "rgb", big).failed
    assert not extract_features(short, tmp_path / "two", big, flow=flow).failed
    rgb, two = np.load(tmp_path / "rgb" / "short.npy"), np.load(tmp_path / "two" / "short.npy")
    assert two.shape == (1024, 4)
    _close(two[:512], rgb)  # RGB stream first, then flow
    assert np.isfinite(two[512:]).all() and two[512:].std() > 0
    manifest = json.loads((tmp_path / "two" / "extract.json").read_text())["spec"]
    assert manifest["flow"]["model"] == "raft_small" and manifest["dim"] == 1024


@pytest.mark.slow
def test_two_gloo_ranks_split_the_videos_and_write_what_one_process_writes(dataset, extracted, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": os.environ.get("PYTHON", "python3"),
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["PATH"] = str(Path(os.sys.executable).parent) + os.pathsep + env["PATH"]
    out = tmp_path / "sharded"
    run = subprocess.run(["bash", "tools/run_singlenode.sh", "extract", "2", str(dataset), *FAST, "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = [ln for ln in run.stderr.splitlines() if ": done," in ln]
    ranks = {name: ln.split("]")[0] for ln in lines for name in LENGTHS if f" {name}: " in ln}
    assert sorted(ranks) == sorted(LENGTHS) and len(lines) == len(LENGTHS)  # each video once
    assert set(ranks.values()) == {"[rank 0", "[rank 1"}  # both ranks worked
    assert "4 extracted" in run.stderr  # rank 0's report covers both ranks
    assert sorted(json.loads((out / "extract.json").read_text())["videos"]) == sorted(LENGTHS)
    for name, array in _arrays(out).items():
        _close(array, np.load(extracted / f"{name}.npy"))


@pytest.mark.slow
def test_a_trained_runs_encoder_gives_the_features_its_stream_computes(synth_video_root, tmp_path):
    from streamseg.api import Experiment
    from streamseg.data.video import VideoFileSource
    from streamseg.deploy.runtime import load_trained_model

    from ..conftest import TINY_STREAM

    items = [v for v in TINY_STREAM if v != "-o"]
    exp = Experiment.load("synth", "tsm_memtcn", "chunk32", overrides=[*items, f"data.root={synth_video_root}"])
    run = exp.train(root=tmp_path / "exp")
    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    report = extract_features([video], tmp_path / "feats", EncoderSpec("run", weights=str(run.path)))
    assert report.done == [video.stem]
    got = np.load(tmp_path / "feats" / f"{video.stem}.npy")

    # the deployment path: the run's own decode size, sample rate and normalisation, chunk by chunk with state
    net, meta = load_trained_model(run.path)
    with VideoFileSource(video, meta.sample_rate, tuple(meta.sample_shape[1:])) as source:
        frames = source.read(10**6)
        num_frames = source.num_frames
    x = torch.from_numpy(meta.preprocess(frames))
    state, parts = net.encoder.init_state(1, "cpu"), []
    with torch.no_grad():
        for start in range(0, x.shape[2], meta.chunk_size):
            features, state = net.encoder(x[:, :, start : start + meta.chunk_size], state, None)
            parts.append(features[0])
    want = torch.cat(parts, dim=1).repeat_interleave(meta.sample_rate, dim=1)[:, :num_frames].numpy()
    assert meta.sample_rate > 1 and got.shape == (net.encoder.out_channels, num_frames)
    _close(got, want)
    spec = json.loads((tmp_path / "feats" / "extract.json").read_text())["spec"]
    assert spec["encoder"] == "run" and spec["sample_rate"] == meta.sample_rate and len(spec["weights_sha256"]) == 64


def test_the_command_line_offers_exactly_the_encoders_and_flow_models_the_library_builds():
    from streamseg.cli import extract as cli
    from streamseg.extract import CLIP_MODELS, IMAGE_MODELS, RAFT_MODELS

    assert sorted(cli.ENCODERS) == sorted([*CLIP_MODELS, *IMAGE_MODELS, "run"])
    assert sorted(cli.FLOW_MODELS) == sorted(RAFT_MODELS)


def test_i420_decoding_converts_on_the_device_close_to_rgb24_and_is_recorded(dataset, extracted, tmp_path):
    from streamseg.data.video import VideoFileSource
    from streamseg.extract.frames import device_reader, i420_to_rgb

    video = dataset / "Videos" / "cut_b.mp4"
    with VideoFileSource(video, 1, (24, 40)) as rgb_source, VideoFileSource(video, 1, None, "i420") as planes:
        plain = device_reader(rgb_source.read, torch.device("cpu"), [((0.0,) * 3, (1 / 255,) * 3)])(100)[0]
        convert = i420_to_rgb(planes.height, planes.width, (24, 40), planes.colour)
        i420 = device_reader(planes.read, torch.device("cpu"), [((0.0,) * 3, (1 / 255,) * 3)], to_rgb=convert)(100)[0]
    assert i420.shape == plain.shape == (25, 3, 24, 40)
    # 0..255 scale: the same pixels up to rounding, except at this video's sharp colour edges, where swscale's
    # chroma upsampling and the resize order differ (a wrong matrix or swapped chroma is off by tens everywhere)
    diff = (i420 - plain).abs()
    assert diff.median() < 2 and diff.mean() < 8
    report = extract_features([video], tmp_path, EncoderSpec("mobilenet_v2", size=(32, 32)), decode="i420")
    assert report.done == ["cut_b"]
    assert json.loads((tmp_path / "extract.json").read_text())["spec"]["decode"] == "i420"
    assert np.load(tmp_path / "cut_b.npy").shape == np.load(extracted / "cut_b.npy").shape
