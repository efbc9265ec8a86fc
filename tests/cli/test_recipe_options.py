"""The official-recipe training options from the command line: C2F-TCN's zoom augmentation
(`-o data.zoom_augment=true`) and DiffAct's accumulation across epochs (`-o train.accumulate_across_epochs=true`)
train end to end in `streamseg train` on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..conftest import streamseg

TINY_DATA = ["-o", "data.num_videos=8", "-o", "data.with_videos=false", "-o", "train.epochs=2"]


def _train(synth_root: Path, root: Path, model: str, *overrides: str) -> Path:
    out = streamseg("train", "-D", "synth", "-M", model, "-E", "quick", "-R", str(root), "-o",
                    f"data.root={synth_root}", *TINY_DATA, *overrides, env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    run = root / "synth" / f"{model}_quick" / "version_0"
    assert json.loads((run / "metrics.json").read_text())["num_videos"] == 2  # the test split, scored
    return run


def test_c2ftcn_trains_with_the_zoom_augmentation(synth_root: Path, tmp_path: Path) -> None:
    run = _train(synth_root, tmp_path, "c2ftcn", "-o", "data.zoom_augment=true", "-o", "data.sample_rate=2",
                 "-o", "model.wide=8", "-o", "model.narrow=8", "-o", "train.epochs=1")
    data = json.loads((run / "config" / "params.json").read_text())["data"]
    assert data["zoom_augment"] is True and data["zoom_window"] == 384  # the quick config's model.window


def test_diffact_accumulates_across_epochs(synth_root: Path, tmp_path: Path) -> None:
    # 5 training videos, one per batch, 4 per step, 2 epochs: steps after videos 4 and 8 of 10
    run = _train(synth_root, tmp_path, "diffact", "-o", "train.batch_size=1", "-o", "train.accumulate=4",
                 "-o", "train.accumulate_across_epochs=true", "-o", "model.encoder_layers=3",
                 "-o", "model.encoder_maps=8", "-o", "model.feature_layers=0,2", "-o", "model.decoder_layers=2",
                 "-o", "model.decoder_maps=8", "-o", "model.time_emb_dim=16", "-o", "model.sampling_steps=2")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["accumulation"]["batches"] == 10 and ckpt["accumulation"]["every"] == 4
    grads = ckpt["accumulation"]["grads"]  # videos 9 and 10 wait in an unfinished window
    assert grads and {f"net.{name}" for name in grads} <= set(ckpt["state_dict"])
    assert {int(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()} == {2}
