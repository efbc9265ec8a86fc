"""The generic LightningModule, DataModules and Trainer assembly."""

from .datamodule import DatasetInfo, FeatureDataModule, TASDatasetParams
from .batches import BatchKind
from .module import SegmentationModule
from .recipes import default_module
from .stream_datamodule import VideoStreamDataModule, build_tas_datamodule

__all__ = ["BatchKind", "DatasetInfo", "FeatureDataModule", "TASDatasetParams", "SegmentationModule", "default_module",
           "VideoStreamDataModule", "build_tas_datamodule"]
