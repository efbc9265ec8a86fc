"""The generic LightningModule, DataModules and Trainer assembly."""

from .datamodule import DatasetInfo, FeatureDataModule, FeatureDatasetParams
from .module import SegmentationModule
from .recipes import default_module

__all__ = ["DatasetInfo", "FeatureDataModule", "FeatureDatasetParams", "SegmentationModule", "default_module"]
