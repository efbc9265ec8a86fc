"""MS-TCN on the synthetic dataset's features, sized to train in a couple of minutes on a 2-core CPU.

    streamseg train -D synth -M mstcn -E quick

The paper model (4 stages x 10 layers x 64 maps) costs ~28 GFLOP per synthetic epoch (24 videos x ~400
frames x 40 layers x 64*64*3*2 FLOP, x3 for the backward pass): ~20 s an epoch on 2 cores. This recipe
keeps the multi-stage refinement but halves the width: 3 x 8 x 32 is ~8x cheaper.
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.model.num_stages = 3
    params.model.num_layers = 8
    params.model.num_maps = 32
    params.train.epochs = 30
    params.train.batch_size = 4  # videos per step; the paper uses 1, 4 is faster on a CPU
    params.train.lr = 1e-3
    params.train.seed = 0
