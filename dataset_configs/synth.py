"""The built-in synthetic dataset: generated into `root` on first use (standard TAS layout, mp4 videos
and 64-d per-frame features). Grammar-ordered actions, background gaps and actions that look alike frame
by frame, so temporal models beat frame-wise ones. See `streamseg.data.synth`."""

from dataclasses import dataclass
from functools import partial

from pytorch_lightning import LightningDataModule

from streamseg.config import TrainParams
from streamseg.data.synth import SynthSpec, ensure
from streamseg.engine import TASDatasetParams, build_tas_datamodule


@dataclass
class Params(TASDatasetParams):
    root: str = "data/synth"
    fps: float = 15.0
    bg_classes: tuple[str, ...] = ("background",)
    num_videos: int = 40  # train/val/test split inside the generator
    synth_seed: int = 0
    with_videos: bool = True
    min_frames: int = 200  # video lengths at 15 fps
    max_frames: int = 600
    feature_dim: int = 64  # 2048 with min/max_frames ~10,000 mimics 50Salads (docs/benchmarks.md)
    height: int = 64  # of the mp4 files; camera=true at 240x320 or 720x1280: camera-like H.264 footage
    width: int = 64
    camera: bool = False


def build_datamodule(p: Params, train: TrainParams) -> LightningDataModule:
    spec = SynthSpec(num_videos=p.num_videos, seed=p.synth_seed, with_videos=p.with_videos,
                     min_frames=p.min_frames, max_frames=p.max_frames,
                     feature_dim=p.feature_dim, height=p.height, width=p.width, camera=p.camera)
    return build_tas_datamodule(p, train, name="synth", prepare=partial(ensure, p.root, spec))
