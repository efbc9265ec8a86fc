"""ASFormer with the official recipe (ChinaYi/ASFormer main.py, model.py): Adam 5e-4 with weight decay
1e-5, ReduceLROnPlateau (0.5, patience 3), 120 epochs, one video per step, CE + 0.15 truncated MSE on
every stage, input channel masking 0.5, seed 19980125. The last epoch's weights are tested
(the official script tests a chosen epoch; no test-set selection here).

    streamseg train -D gtea -M asformer -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.engine.recipes.asformer import asformer_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    params.train.epochs = 120
    params.train.batch_size = 1
    params.train.lr = 5e-4
    params.train.weight_decay = 1e-5
    params.train.seed = 19980125  # the official main.py's seed
    params.train.shuffle = "asformer"  # the official training order (ChinaYi/ASFormer batch_gen.py)
    params.model.channel_masking_rate = 0.5  # official: larger dropout against GTEA's over-fitting
