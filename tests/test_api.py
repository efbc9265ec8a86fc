"""`streamseg.api`: Experiment.load / train, Run.metrics / evaluate / predict agree with the engine's
own test-split predictions and with `evaluate_dirs`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamseg.api import Experiment, Prediction, Run, evaluate_dirs, predict
from streamseg.config import ConfigError
from streamseg.metrics.io import read_label_file, read_mapping

from .conftest import TINY

TINY_ITEMS = [TINY[i + 1] for i in range(0, len(TINY), 2)]


def test_load_applies_typed_overrides() -> None:
    exp = Experiment.load("synth", "mstcn", "quick", overrides=["train.epochs=3", "train.lr=0.01"])
    assert exp.name == "synth/mstcn_quick"
    assert exp.params.train.epochs == 3 and exp.params.train.lr == 0.01
    assert exp.overrides == {"train.epochs": 3, "train.lr": 0.01}
    assert exp.params.model.num_maps == 32  # set by exp_configs/synth/mstcn_quick.py, not overridden


def test_load_rejects_unknown_keys_and_configs() -> None:
    with pytest.raises(ConfigError, match="train.epochs"):  # the message lists the valid keys
        Experiment.load("synth", "mstcn", "quick", overrides=["train.epoch=3"])
    with pytest.raises(ConfigError, match="no model config 'nosuchmodel'"):
        Experiment.load("synth", "nosuchmodel", "quick")


def test_run_requires_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        Run(tmp_path)


@pytest.fixture(scope="module")
def streaming_run(tmp_path_factory, synth_root) -> tuple[Experiment, Run, Path]:
    """A tiny causal MemoryTCN trained on features in chunks of 16 (2 epochs, 8 videos)."""
    root = tmp_path_factory.mktemp("api") / "experiments"
    exp = Experiment.load("synth", "memtcn", "quick",
                          overrides=[*TINY_ITEMS, f"data.root={synth_root}", "train.chunk_size=16"])
    return exp, exp.train(root=root), root


def _saved_prediction(run: Run, data_root: Path, vid: str) -> np.ndarray:
    names = read_mapping(data_root / "mapping.txt")
    return read_label_file(run.predictions_dir / vid).to_ids({n: i for i, n in enumerate(names)})


def test_train_returns_the_finished_run(streaming_run, synth_root) -> None:
    exp, run, root = streaming_run
    assert run.done and run.path.parent == root / "synth" / "memtcn_quick"
    assert [r.path for r in exp.runs(root)] == [run.path]
    metrics = Run(run.path).metrics
    assert {"acc", "edit", "f1@10", "f1@25", "f1@50", "latency"} <= set(metrics)
    assert metrics["latency"]["online"] and metrics["latency"]["frames"] == 15  # (16 - 1 + 0) x sample rate 1
    assert run.params["train"]["chunk_size"] == 16


def test_predict_features_matches_the_engine_and_the_events(streaming_run, synth_root) -> None:
    _, run, _ = streaming_run
    vid = sorted(p.name for p in run.predictions_dir.iterdir())[0]
    saved = _saved_prediction(run, synth_root, vid)
    seen: list[dict] = []
    # a chunk size unlike the training one: a causal model's labels do not depend on it
    pred = run.predict(synth_root / "features" / f"{vid}.npy", chunk=5, on_segment=seen.append)
    assert isinstance(pred, Prediction) and pred.name == vid
    np.testing.assert_array_equal(pred.labels, saved)
    assert seen == pred.segments and seen[0]["start"] == 0 and seen[-1]["end"] == len(saved)
    from_segments = np.concatenate([np.full(s["end"] - s["start"], s["label_id"]) for s in seen])
    np.testing.assert_array_equal(from_segments, pred.labels)
    assert pred.label_names()[0] == pred.class_names[pred.labels[0]]


def test_predict_rejects_the_wrong_input_kind(streaming_run, tmp_path: Path) -> None:
    _, run, _ = streaming_run
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="reads a \\(D, T\\) features .npy file"):
        run.predict(video)
    with pytest.raises(FileNotFoundError):
        run.predict(tmp_path / "missing.npy")


def test_export_onnx_and_predict_with_the_export(streaming_run, synth_root, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    _, run, _ = streaming_run
    vid = sorted(p.name for p in run.predictions_dir.iterdir())[0]
    onnx_path = run.export_onnx(tmp_path / "m.onnx")
    assert onnx_path == tmp_path / "m.onnx" and onnx_path.with_suffix(".json").is_file()
    features = synth_root / "features" / f"{vid}.npy"
    from_onnx = predict(onnx_path, features, chunk=7)  # ONNX Runtime, any chunk length
    np.testing.assert_array_equal(from_onnx.labels, _saved_prediction(run, synth_root, vid))
    np.testing.assert_array_equal(predict(run, features).labels, from_onnx.labels)  # a Run: its PyTorch model
    with pytest.raises(ValueError, match="realtime and annotate need a video"):
        predict(onnx_path, features, realtime=True)


def test_predict_on_a_video_with_an_annotated_copy(synth_video_root, tmp_path: Path) -> None:
    import av

    from streamseg.deploy.infer import infer_video

    from .deploy.test_infer import varying_streamer

    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    streamer = varying_streamer(video)  # any streamer (or a run, a checkpoint, an .onnx file)
    seen: list[dict] = []
    pred = predict(streamer, video, chunk=5, on_segment=seen.append, annotate=tmp_path / "annotated.mp4")
    np.testing.assert_array_equal(pred.labels, infer_video(streamer, video, chunk=5).labels)
    assert pred.name == video.stem and seen == pred.segments and pred.realtime is None and pred.fps == 15.0
    with av.open(str(tmp_path / "annotated.mp4")) as annotated:
        assert sum(1 for _ in annotated.decode(video=0)) == len(pred.labels)


def test_evaluate_agrees_with_evaluate_dirs(streaming_run, synth_root) -> None:
    _, run, _ = streaming_run
    metrics = run.evaluate("last")
    assert metrics["checkpoint"].endswith("last.ckpt") and run.metrics["checkpoint"] == metrics["checkpoint"]
    scored = evaluate_dirs(run.predictions_dir, synth_root / "groundTruth", mapping=synth_root / "mapping.txt",
                           split_file=synth_root / "splits" / "test.split1.bundle")
    for key in ("acc", "edit", "f1@10", "f1@50"):
        assert scored[key] == pytest.approx(metrics[key]), key


def test_readme_python_api_names_exist() -> None:
    """Every attribute the README's "Python API" example uses exists (the example itself trains)."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    owners = {"Experiment": Experiment, "exp": Experiment, "run": Run, "pred": Prediction}
    used = set(re.findall(r"\b(Experiment|exp|run|pred)\.(\w+)", code))
    assert len(used) >= 8, used
    fields = {"labels", "segments", "params", "path"}  # attributes set in __init__ / dataclass fields
    missing = [f"{o}.{a}" for o, a in used if not hasattr(owners[o], a) and a not in fields]
    assert not missing, missing
