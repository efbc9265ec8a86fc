"""ASFormer on the synthetic dataset's features, sized to train in a couple of minutes on a 2-core CPU,
with the paper's optimiser and plateau scheduler (see exp_configs/gtea/asformer_paper.py).

    streamseg train -D synth -M asformer -E quick

Encoder + 1 decoder x 6 blocks (windows 1..32) x 32 maps instead of 1 + 3 x 10 x 64; the sliding-window
attention makes a block ~2.5x an MS-TCN layer of the same width on a CPU, so this is ~1.7x synth/mstcn_quick
per epoch, and trains 25 epochs instead of 30.
"""

from streamseg.config import RunParams
from streamseg.engine.recipes.asformer import asformer_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    params.model.num_decoders = 1
    params.model.num_layers = 6
    params.model.num_maps = 32
    params.train.epochs = 25
    params.train.batch_size = 4
    params.train.lr = 1e-3
    params.train.weight_decay = 1e-5
    params.train.seed = 0
