"""Every experiment config builds and trains two steps on tiny data (the "sweep" of STYLE.md, issue #5).

The configs are listed from the folders at collection time (tests/configs.py), so a config added to
`exp_configs/` is swept without any edit here. Each one is resolved by the loader with its own dataset,
model and experiment modules, then re-pointed at the synthetic fixtures (every shipped dataset config reads
the standard TAS layout, so `data.root` is enough; `data.input="video"` configs get the fixture with mp4
files) and shrunk by `-o` overrides: its model config's `TINY` size (a model config must declare one:
tests/models/test_model_configs.py). Then `streamseg.engine.runner.build` assembles DataModule and
LightningModule as a run does, and Lightning trains 2 optimizer steps: the loss must be finite and the
weights must move.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from streamseg.config import load_configs, resolve_params
from streamseg.engine import dist
from streamseg.engine.batches import BatchKind
from streamseg.engine.runner import batch_kind, build

from ..configs import experiment_paths, model_names, model_of, tiny_overrides

EXPERIMENTS = experiment_paths()
# TINY keys this sweep sets itself: the frame size of its fixture videos, and Transeger's feedback delay,
# which the configs leave to follow the chunk (model_configs/transeger.py derive)
SWEEP_SETS = ("frame_size", "feedback_delay")

FRAME_SIZE = "32,32"  # video inputs: synth videos are 64x64; every backbone here accepts 32x32
CHUNK = 8  # sampled frames per chunk for configs that chunk (a multiple of video_memtcn's clip_len 4)
TRAIN = ["train.batch_size=2", "train.num_workers=0", "train.precision=32-true", "train.accumulate=1",
         "train.epochs=1", "train.val_every=1", "train.log_every=1"]
# synth.json spec key -> the synth dataset config's field: the fixture's spec, so `ensure` reuses it
SYNTH_SPEC_FIELDS = {"num_videos": "num_videos", "seed": "synth_seed", "with_videos": "with_videos",
                     "min_frames": "min_frames", "max_frames": "max_frames", "feature_dim": "feature_dim"}


def _split_name(exp: Path) -> tuple[str, str, str]:
    """`exp_configs/<dataset>/<model>_<exp>.py` -> (dataset, model, exp)."""
    model = model_of(exp)
    if model is None:
        pytest.fail(f"{exp}: its name must be <model>_<exp>.py with <model> in model_configs/ ({model_names()})")
    return exp.parent.name, model, exp.stem[len(model) + 1 :]


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory, synth_root, synth_video_root) -> dict[str, Path]:
    """Private copies of the session fixtures: a config whose dataset spec differed would make `ensure`
    regenerate the data in place, which must not touch what other tests read."""
    base = tmp_path_factory.mktemp("sweep")
    return {"features": Path(shutil.copytree(synth_root, base / "features")),
            "video": Path(shutil.copytree(synth_video_root, base / "video"))}


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tests/conftest.py


def _fields(obj) -> set[str]:
    return {f.name for f in dataclasses.fields(obj)}


def _tiny_overrides(configs, params, model: str, roots: dict[str, Path]) -> list[str]:
    """Overrides that point a resolved config at the synthetic fixtures and shrink it."""
    data_fields, model_fields = _fields(params.data), _fields(params.model)
    video = batch_kind(configs, params) is BatchKind.STREAMS
    root = roots["video" if video else "features"]
    out = [f"data.root={root}", "data.split=1"]
    if "bg_classes" in data_fields:
        out.append("data.bg_classes=background")  # the synthetic mapping's background class
    if "val_fraction" in data_fields:
        out.append("data.val_fraction=0")
    spec = json.loads((root / "synth.json").read_text())["spec"]
    out += [f"data.{field}={spec[key]}" for key, field in SYNTH_SPEC_FIELDS.items() if field in data_fields]
    if video:
        out.append(f"data.frame_size={FRAME_SIZE}")
        if "frame_size" in model_fields:
            out.append(f"model.frame_size={FRAME_SIZE}")
    if params.train.chunk_size > 0:
        out.append(f"train.chunk_size={CHUNK}")
    if "compile" in _fields(params.train):
        out.append("train.compile=false")  # compiling costs more than two steps
    return tiny_overrides(model, skip=SWEEP_SETS) + out + TRAIN


class _Steps(pl.Callback):
    """Records the training loss after every optimizer step."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self._step = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self._step:  # an optimizer step happened in this batch
            self._step = trainer.global_step
            self.losses.append(float(trainer.callback_metrics["train/loss"]))


@pytest.mark.parametrize("exp", EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_experiment_config_trains_two_steps(exp: Path, data_roots, tmp_path) -> None:
    dataset, model, name = _split_name(exp)
    configs = load_configs(dataset, model, name)
    params, _ = resolve_params(configs)
    params, _ = resolve_params(configs, _tiny_overrides(configs, params, model, data_roots))

    torch.manual_seed(0)
    dm, info, module = build(configs, params, dist.Launch(rank=0, local_rank=0, world_size=1, node_rank=0))
    before = {n: p.detach().clone() for n, p in module.net.named_parameters()}
    steps = _Steps()
    stream = dm.batch_kind is BatchKind.STREAMS
    trainer = pl.Trainer(
        max_steps=2, log_every_n_steps=1, limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu", devices=1,
        precision=params.train.precision, gradient_clip_val=None if stream else (params.train.grad_clip or None),
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path), callbacks=[steps],
    )
    trainer.fit(module, datamodule=dm)

    assert trainer.global_step == 2, f"{exp}: {trainer.global_step} optimizer steps in an epoch of tiny data"
    assert len(steps.losses) == 2 and all(math.isfinite(v) for v in steps.losses), steps.losses
    moved = [n for n, p in module.net.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert moved, f"{exp}: no parameter changed in 2 optimizer steps"
