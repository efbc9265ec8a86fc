"""ASRF on the synthetic dataset's features with its official loss (the model config's defaults: class-
weighted CE, Gaussian-similarity T-MSE, boundary BCE with the training split's pos_weight; `asrf_module`),
sized for a couple of minutes on a 2-core CPU. Deviations from the official recipe, on purpose: trunk and
stages of 8 layers x 32 maps, 3 class + 3 boundary stages, 30 epochs, 4 videos per step, lr 1e-3. On
these 64-d features neighbouring frames lie ~20 apart, so the Gaussian similarity exp(-d / 2) is ~1e-5
and the smoothing term is in effect off (faithfully: it is the official formula).

    streamseg train -D synth -M asrf -E quick
"""

from streamseg.config import RunParams
from streamseg.engine.recipes.asrf import asrf_module as build_module  # noqa: F401 (the experiment's recipe)


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
