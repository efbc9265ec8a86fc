"""ASRF on the synthetic dataset's features with its boundary loss, sized for a couple of minutes on a
2-core CPU: trunk and stages of 8 layers x 32 maps, 3 class + 3 boundary stages.

    streamseg train -D synth -M asrf -E quick
"""

from streamseg.config import RunParams
from streamseg.engine.recipes import asrf_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    params.model.num_layers = 8
    params.model.num_maps = 32
    params.model.num_stages_asb = 3
    params.model.num_stages_brb = 3
    params.train.epochs = 30
    params.train.batch_size = 4
    params.train.lr = 1e-3
    params.train.weight_decay = 1e-4
    params.train.seed = 0
