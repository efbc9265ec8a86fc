"""C2F-TCN on the synthetic dataset's features, sized for a couple of minutes on a 2-core CPU: the
official U-Net at a quarter of its widths (64 / 32 channels instead of 256 / 128) and windows of 384
frames (the minimum: 6 halvings then the pyramid's pool of 6), every synthetic video in 1 or 2 windows.

    streamseg train -D synth -M c2ftcn -E quick
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.model.window = 384
    params.model.wide = 64
    params.model.narrow = 32
    params.train.epochs = 30
    params.train.batch_size = 4
    params.train.lr = 1e-3
    params.train.weight_decay = 3e-4
    params.train.seed = 0
