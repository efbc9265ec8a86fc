"""streamseg: streaming and offline temporal action segmentation."""

__version__ = "0.1.0"
