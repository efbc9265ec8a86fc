"""`streamseg test --ckpt none -o model.weights=PATH`: a state dict saved by the official MS-TCN code scores on
the test split without a training run, and the predictions are the official model's frame labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from streamseg.metrics.io import read_results

from ..conftest import streamseg
from ..models.test_mstcn import _OfficialMultiStage

SIZES = {"num_stages": 2, "num_layers": 3, "num_maps": 8}


def _official_predict(model: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    """The official `predict`: the whole video, a mask of ones, argmax of the last stage."""
    x = torch.from_numpy(features).float()[None]
    with torch.no_grad():
        out = model(x, torch.ones(1, 1, x.shape[-1]))
    return out[-1, 0].argmax(dim=0).numpy()


def test_an_official_mstcn_checkpoint_gives_the_official_predictions(synth_root: Path, tmp_path: Path) -> None:
    names = [line.split()[1] for line in (synth_root / "mapping.txt").read_text().splitlines() if line.strip()]
    dim = np.load(next((synth_root / "features").glob("*.npy"))).shape[0]
    torch.manual_seed(3)
    official = _OfficialMultiStage(SIZES["num_stages"], SIZES["num_layers"], SIZES["num_maps"], dim, len(names))
    for p in official.parameters():  # larger weights than the default init, so that labels vary over a video
        p.data.mul_(3.0)
    official.eval()
    ckpt = tmp_path / "epoch-50.model"
    torch.save(official.state_dict(), ckpt)  # what the official train.py writes

    out = streamseg("test", "-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(tmp_path / "runs"),
                    "-o", f"data.root={synth_root}", "-o", f"model.weights={ckpt}", "--ckpt", "none",
                    "--accelerator", "cpu", *[a for k, v in SIZES.items() for a in ("-o", f"model.{k}={v}")])
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "synth" / "mstcn_quick" / "weights_epoch-50"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["weights"] == str(ckpt) and metrics["num_videos"] > 0

    tests = [Path(v).stem for v in (synth_root / "splits" / "test.split1.bundle").read_text().split()]
    assert sorted(p.name for p in (run / "predictions").iterdir()) == sorted(tests)  # official: no extension
    varied = 0
    for video in tests:
        expected = _official_predict(official, np.load(synth_root / "features" / f"{video}.npy"))
        got = read_results(run / "predictions" / video)
        assert got.names == [names[i] for i in expected], video
        varied += len(set(expected.tolist())) > 1
    assert varied, "every video got one label: the comparison would not catch wrong weights"


def test_no_weights_or_a_missing_file_is_a_clear_error(synth_root: Path, tmp_path: Path) -> None:
    common = ["test", "-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(tmp_path), "-o", f"data.root={synth_root}",
              "--ckpt", "none", "--accelerator", "cpu"]
    out = streamseg(*common)
    assert out.returncode != 0 and "-o model.weights=PATH" in out.stderr
    out = streamseg(*common, "-o", f"model.weights={tmp_path / 'nope.model'}")
    assert out.returncode != 0 and "nope.model does not exist" in out.stderr
