"""MS-TCN++ on the synthetic dataset's features, sized to train in a couple of minutes on a 2-core CPU.

    streamseg train -D synth -M mstcn2 -E quick

The paper model (PG 11 dual-dilated layers + 3 x 10 layers, 64 maps) is ~1.3x MS-TCN's cost per frame;
this recipe keeps the dual-dilated prediction generation and two refinements at half width:
PG 8 layers + 2 x 8 layers, 32 maps, in line with synth/mstcn_quick (3 x 8 x 32).
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.model.num_layers_pg = 8
    params.model.num_layers_r = 8
    params.model.num_refinements = 2
    params.model.num_maps = 32
    params.train.epochs = 30
    params.train.batch_size = 4  # videos per step; the paper uses 1, 4 is faster on a CPU
    params.train.lr = 1e-3
    params.train.seed = 0
