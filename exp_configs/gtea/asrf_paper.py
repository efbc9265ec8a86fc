"""ASRF with the official recipe (yiskw713/asrf libs/config.py, train.py, libs/helper.py): Adam 5e-4,
no weight decay (libs/optimizer.py gives Adam none; the config's 1e-4 is SGD's), 50 epochs,
one video per step, seed 0; loss (the model config's defaults, official):
per stage CE with median-frequency class weights + 1.0 x the Gaussian-similarity T-MSE on the input
features, averaged over stages, plus 0.1 x the boundary BCE with the dataset's positive weight (frames /
boundary frames). Evaluated on the boundary-refined prediction (the model's `refine`, boundary
threshold 0.5;
majority-vote ties as libs/postprocess.py: `model.tie_rule`).
Difference: trained on the training split, over which the class weights and pos_weight
are counted too (the official trains on, and counts over, train + its held-out val).

    streamseg train -D gtea -M asrf -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.engine.recipes.asrf import asrf_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    params.train.epochs = 50
    params.train.batch_size = 1
    params.train.lr = 5e-4
    params.train.weight_decay = 0.0  # official Adam: no weight decay (libs/optimizer.py)
    params.model.tie_rule = "official"  # libs/postprocess.py's majority-vote ties
    params.train.seed = 0  # train.py --seed default
