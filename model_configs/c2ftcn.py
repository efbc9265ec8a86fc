"""C2F-TCN (Singhania et al., 2021) on pre-extracted features: the official U-Net with temporal pyramid
pooling and the decoder-output ensemble (weights 1,1,1,1,0,0); 6,740,937 parameters for 2048-d input and
11 classes. Videos run in windows of `window` frames (the official max_frames_per_video: 1200 Breakfast,
600 GTEA, 960 50Salads; at least 384). Offline (lookahead None).

`weights`: a state dict saved by the official code (`*_unet.wt`), loaded strictly (official names).
"""

from dataclasses import dataclass

from streamseg.models import C2FTCN, load_weights


@dataclass
class Params:
    window: int = 1200
    ensemble_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 0.0, 0.0)
    wide: int = 256  # channels of the three finest levels
    narrow: int = 128  # channels of the coarser levels and the decoder
    weights: str | None = None


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(window=384, wide=8, narrow=8)  # 384: the smallest window C2F-TCN takes


def derive(params) -> None:
    """After the overrides: an unset `data.zoom_window` (the zoom augmentation's window, streamseg.data.zoom)
    follows `model.window`, so a zoomed training video fits one window as in the official loader."""
    if getattr(params.data, "zoom_window", 0) is None:
        params.data.zoom_window = params.model.window


def build_model(p: Params, in_channels: int, num_classes: int) -> C2FTCN:
    model = C2FTCN(in_channels, num_classes, p.window, p.ensemble_weights, p.wide, p.narrow)
    return model if p.weights is None else load_weights(model, p.weights)
