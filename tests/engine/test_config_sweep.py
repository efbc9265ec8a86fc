"""Every experiment config builds and trains two steps on tiny data (the "sweep" of STYLE.md, issue #5).

The configs are globbed at collection time, so a config added to `exp_configs/` is swept without any edit
here. Each one is resolved by the loader with its own dataset, model and experiment modules, then
re-pointed at the synthetic fixtures (every shipped dataset config reads the standard TAS layout, so
`data.root` is enough; `data.input="video"` configs get the fixture with mp4 files) and shrunk by `-o`
overrides: one policy per model config name (a model without one gets the generic policy, applied to the
keys its `Params` has). Then `streamseg.engine.runner.build` assembles DataModule and LightningModule as a
run does, and Lightning trains 2 optimizer steps: the loss must be finite and the weights must move.
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

from ..conftest import REPO

EXPERIMENTS = sorted(p for p in (REPO / "exp_configs").glob("*/*.py") if not p.name.startswith("_"))
MODELS = sorted((p.stem for p in (REPO / "model_configs").glob("*.py") if not p.name.startswith("_")),
                key=len, reverse=True)  # longest first: model names may prefix each other (mstcn, mstcn2)

# Per model config: overrides that make it tiny (CPU, seconds) while keeping its structure (stages,
# refinements, decoders, both branches...).
SHRINK: dict[str, list[str]] = {
    "mstcn": ["model.num_stages=2", "model.num_layers=3", "model.num_maps=8"],
    "mstcn2": ["model.num_layers_pg=3", "model.num_layers_r=2", "model.num_refinements=1", "model.num_maps=8"],
    "asformer": ["model.num_decoders=1", "model.num_layers=3", "model.num_maps=8"],
    "asrf": ["model.num_layers=3", "model.num_maps=8", "model.num_stages_asb=2", "model.num_stages_brb=2"],
    "c2ftcn": ["model.wide=8", "model.narrow=8", "model.window=384"],  # 384: the smallest window C2F-TCN takes
    "diffact": ["model.encoder_layers=3", "model.encoder_maps=8", "model.feature_layers=0,2", "model.decoder_layers=2",
                "model.decoder_maps=8", "model.time_emb_dim=16", "model.timesteps=100", "model.sampling_steps=2"],
    "memtcn": ["model.num_stages=2", "model.num_layers=3", "model.num_maps=8"],
    "framewise": ["model.hidden_channels=8"],
    "mobilenet_framewise": ["model.hidden_channels=8"],
    "tsm_memtcn": ["model.num_layers=2", "model.num_maps=8", "model.num_blocks=4"],
    "transeger": ["model.num_layers=2", "model.num_maps=8", "model.image_dim=8", "model.text_dim=8",
                  "model.text_width=16", "model.text_layers=1", "model.text_heads=2", "model.context_tokens=2"],
    "video_memtcn": ["model.clip_len=4", "model.context=4", "model.num_layers=2", "model.num_maps=8"],
}
# For a model config without a policy: these values for whichever of the keys its Params has.
GENERIC = {"num_stages": "1", "num_layers": "2", "num_maps": "8", "hidden_channels": "8", "num_blocks": "4"}

FRAME_SIZE = "32,32"  # video inputs: synth videos are 64x64; every backbone here accepts 32x32
CHUNK = 8  # sampled frames per chunk for configs that chunk (a multiple of video_memtcn's clip_len 4)
TRAIN = ["train.batch_size=2", "train.num_workers=0", "train.precision=32-true", "train.accumulate=1",
         "train.epochs=1", "train.val_every=1", "train.log_every=1"]
# synth.json spec key -> the synth dataset config's field: the fixture's spec, so `ensure` reuses it
SYNTH_SPEC_FIELDS = {"num_videos": "num_videos", "seed": "synth_seed", "with_videos": "with_videos",
                     "min_frames": "min_frames", "max_frames": "max_frames", "feature_dim": "feature_dim"}


def _split_name(exp: Path) -> tuple[str, str, str]:
    """`exp_configs/<dataset>/<model>_<exp>.py` -> (dataset, model, exp)."""
    model = next((m for m in MODELS if exp.stem.startswith(m + "_")), None)
    if model is None:
        pytest.fail(f"{exp}: its name must be <model>_<exp>.py with <model> in model_configs/ ({sorted(MODELS)})")
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
    shrink = SHRINK.get(model)
    if shrink is None:
        shrink = [f"model.{k}={v}" for k, v in GENERIC.items() if k in model_fields]
    return out + TRAIN + shrink


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
