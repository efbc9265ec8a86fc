"""GTEA (MS-TCN data bundle): 28 videos, 4 splits of 7 test videos, 11 classes incl. `background`,
15 fps, I3D features (2048, T). MS-TCN's protocol ignores `background` in Edit/F1."""

from dataclasses import dataclass

from pytorch_lightning import LightningDataModule

from streamseg.config import TrainParams
from streamseg.engine import TASDatasetParams, build_tas_datamodule


@dataclass
class Params(TASDatasetParams):
    root: str = "data/gtea"
    fps: float = 15.0
    sample_rate: int = 1
    bg_classes: tuple[str, ...] = ("background",)


def build_datamodule(p: Params, train: TrainParams) -> LightningDataModule:
    return build_tas_datamodule(p, train, name="gtea")
