"""50Salads (MS-TCN data bundle): 50 videos, 5 splits of 10 test videos, 19 mid-level classes,
30 fps; models see 15 fps (sample_rate 2, as MS-TCN/ASFormer) and are scored at 30 fps.
`action_start`/`action_end` are scored as actions, as MS-TCN, ASFormer and DiffAct do."""

from dataclasses import dataclass

from pytorch_lightning import LightningDataModule

from streamseg.config import TrainParams
from streamseg.engine import TASDatasetParams, build_tas_datamodule


@dataclass
class Params(TASDatasetParams):
    root: str = "data/50salads"
    fps: float = 30.0
    sample_rate: int = 2
    bg_classes: tuple[str, ...] = ()


def build_datamodule(p: Params, train: TrainParams) -> LightningDataModule:
    return build_tas_datamodule(p, train, name="50salads")
