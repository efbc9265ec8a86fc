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
                    "--accelerator", "cpu", *[a for k, v in SIZES.items() for a in ("-o", f"model.{k}={v}")],
                    "--protocol", "asformer")  # scored as ASFormer's eval.py would (predictions unchanged)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "synth" / "mstcn_quick" / "weights_epoch-50"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["weights"] == str(ckpt) and metrics["num_videos"] > 0 and metrics["protocol"] == "asformer"

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


def _official_c2f_test_time(net: torch.nn.Module, features: np.ndarray, length: int, window: int,
                            rates: list[int], weights: list[float]) -> np.ndarray:
    """C2F-TCN's eval.py with test-time augmentation, re-stated: per rate c, the video is cut into pieces of
    window * c frames; each piece becomes `window` rows (the max over each c frames, zeros after them), the
    network's ensemble probabilities of all pieces are joined, cut to the rows that hold frames, each row
    repeated c times and cut to the video's length; the weighted sum over rates / the weight sum, argmax."""
    total = 0
    for c, w in zip(rates, weights):
        pieces = []
        for start in range(0, length, window * c):
            end = min(start + window * c, length)
            rows = [features[:, i:min(end, i + c)].max(axis=1) for i in range(start, end, c)]
            x = torch.zeros(1, features.shape[0], window)
            x[0, :, :len(rows)] = torch.from_numpy(np.stack(rows, axis=1)).float()
            with torch.no_grad():
                prob = net.ensemble(*net.unet(x))[0]  # the network itself is tested against the official
            pieces.append(prob[:, :len(rows)])
        prob = torch.cat(pieces, dim=1)
        total = total + w * prob.repeat_interleave(c, dim=1)[:, :length]
    return (total / sum(weights)).argmax(dim=0).numpy()


def test_a_c2ftcn_checkpoint_scored_with_test_time_augmentation_gives_the_official_predictions(
        synth_root: Path, tmp_path: Path) -> None:
    from streamseg.models import C2FTCN

    names = [line.split()[1] for line in (synth_root / "mapping.txt").read_text().splitlines() if line.strip()]
    dim = np.load(next((synth_root / "features").glob("*.npy"))).shape[0]
    torch.manual_seed(5)
    net = C2FTCN(dim, len(names), window=384, wide=16, narrow=8)
    for p in net.parameters():
        p.data.mul_(3.0)
    net.eval()
    ckpt = tmp_path / "best_gtea_unet.wt"
    torch.save(net.state_dict(), ckpt)
    rates, weights = [1, 2, 3], [1.0, 3.0, 1.0]  # rate 1: videos of 385+ frames take two pieces
    out = streamseg("test", "-D", "synth", "-M", "c2ftcn", "-E", "quick", "-R", str(tmp_path / "runs"),
                    "-o", f"data.root={synth_root}", "-o", f"model.weights={ckpt}", "--ckpt", "none",
                    "--accelerator", "cpu", "-o", "model.wide=16", "-o", "model.narrow=8",
                    "-o", "data.sample_rate=4", "-o", "data.pooling=max",
                    "-o", "data.test_rates=1,2,3", "-o", "data.test_rate_weights=1,3,1")
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "synth" / "c2ftcn_quick" / "weights_best_gtea_unet"
    tests = [Path(v).stem for v in (synth_root / "splits" / "test.split1.bundle").read_text().split()]
    long_videos = 0
    for video in tests:
        features = np.load(synth_root / "features" / f"{video}.npy")
        length = len((synth_root / "groundTruth" / f"{video}.txt").read_text().split())
        length = min(length, features.shape[1])
        long_videos += length > 384
        expected = _official_c2f_test_time(net, features[:, :length], length, 384, rates, weights)
        got = read_results(run / "predictions" / video)
        assert got.names == [names[i] for i in expected], video
    assert long_videos, "no video needs two windows at rate 1: the windowing is not tested"
