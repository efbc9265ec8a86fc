"""Breakfast (MS-TCN data bundle): 1712 videos, 4 splits, 48 classes incl. `SIL`, 15 fps.
`SIL` is scored as an action, as MS-TCN, ASFormer and DiffAct do (set bg_classes to ("SIL",) to follow
C2F-TCN instead; the numbers are then not comparable)."""

from dataclasses import dataclass

from pytorch_lightning import LightningDataModule

from streamseg.config import TrainParams
from streamseg.engine import TASDatasetParams, build_tas_datamodule


@dataclass
class Params(TASDatasetParams):
    root: str = "data/breakfast"
    fps: float = 15.0
    sample_rate: int = 1
    bg_classes: tuple[str, ...] = ()


def build_datamodule(p: Params, train: TrainParams) -> LightningDataModule:
    return build_tas_datamodule(p, train, name="breakfast")
