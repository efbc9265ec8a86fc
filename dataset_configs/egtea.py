"""EGTEA Gaze+ in the standard TAS layout (as SVTAS prepares it): 3 splits, 24 fps, frames between
actions labelled `background`, which Edit/F1 ignore."""

from dataclasses import dataclass

from pytorch_lightning import LightningDataModule

from streamseg.config import TrainParams
from streamseg.engine import TASDatasetParams, build_tas_datamodule


@dataclass
class Params(TASDatasetParams):
    root: str = "data/egtea"
    fps: float = 24.0
    sample_rate: int = 1
    bg_classes: tuple[str, ...] = ("background",)


def build_datamodule(p: Params, train: TrainParams) -> LightningDataModule:
    return build_tas_datamodule(p, train, name="egtea")
