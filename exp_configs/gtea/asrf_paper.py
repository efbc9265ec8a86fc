"""ASRF with the official recipe (yiskw713/asrf libs/config.py, train.py): Adam 5e-4, weight decay 1e-4,
50 epochs, one video per step, seed 0; loss: per stage CE + smoothing, averaged over stages, plus 0.1 x
the boundary BCE. Evaluated on the boundary-refined prediction (the model's
`refine`). Differences: unweighted CE and MS-TCN's 0.15 T-MSE instead of the official class-weighted CE
and Gaussian-similarity T-MSE (weight 1); BCE without the dataset's positive weight; trained on the
training split (the official trains on train + its held-out val).

    streamseg train -D gtea -M asrf -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.engine.recipes import asrf_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    params.train.epochs = 50
    params.train.batch_size = 1
    params.train.lr = 5e-4
    params.train.weight_decay = 1e-4
    params.train.seed = 0  # train.py --seed default
