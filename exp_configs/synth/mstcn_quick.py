"""MS-TCN on the synthetic dataset's features: a few minutes on a 2-core CPU.

    streamseg train -D synth -M mstcn -E quick
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.train.epochs = 40
    params.train.batch_size = 4  # videos per step; the paper uses 1, 4 trains faster on CPU
    params.train.lr = 5e-4  # MS-TCN's Adam learning rate
    params.train.seed = 0
