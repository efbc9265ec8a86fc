"""Frame-wise baseline on the synthetic features (no temporal context): the row temporal models must beat.

    streamseg train -D synth -M framewise -E quick
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.train.epochs = 30
    params.train.batch_size = 4
    params.train.lr = 1e-3
