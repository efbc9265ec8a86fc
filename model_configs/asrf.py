"""ASRF (Ishikawa et al., WACV'21) on pre-extracted features: the official config (shared 10-layer trunk,
4 class + 4 boundary stages, 64 maps); 1,292,784 parameters for 2048-d input and 11 classes. In eval mode
the last stage is the boundary-refined prediction (`refine=false` for the raw one). Offline. Train it with
its own loss (ASRFLoss): see exp_configs/*/asrf_*.py.

The loss fields are the official defaults (`libs/config.py`, as in the shipped `result/*/config.yaml`):
`class_weight` (median-frequency class weights in the CE), `smoothing="gstmse"` with `smooth_weight` 1
(`gstmse`, `gstmse_weight`: the Gaussian-similarity T-MSE on the input features; "mstcn": MS-TCN's
truncated MSE), `boundary_weight` 0.1 (`lambda_b`): `Params` subclasses `ASRFLossParams`, which the
`streamseg.engine.recipes.asrf.asrf_module` recipe reads (and computes the boundary BCE's official pos_weight
from the training labels); `build_model` does not.

`weights`: a state dict saved by the official code (yiskw713/asrf, `final_model.prm`), loaded strictly
after renaming its `conv_in` 1x1 convs to ours (`streamseg.models.asrf.official_key`).
"""

from dataclasses import dataclass
from typing import Literal

from streamseg.models import ASRF, load_weights
from streamseg.models.asrf import ASRFLossParams, official_key


@dataclass
class Params(ASRFLossParams):  # + the training loss's class_weight, smoothing, smooth_weight, boundary_weight
    num_layers: int = 10
    num_maps: int = 64
    num_stages_asb: int = 4
    num_stages_brb: int = 4
    dropout: float = 0.5
    refine: bool = True
    boundary_threshold: float = 0.5
    # majority-vote ties in the refinement: "probability" (larger softmax sum) or "official" (see
    # streamseg.models.asrf.refine_with_boundaries); the paper configs use "official"
    tie_rule: Literal["probability", "official"] = "probability"
    weights: str | None = None


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(num_layers=3, num_maps=8, num_stages_asb=3, num_stages_brb=2)


def build_model(p: Params, in_channels: int, num_classes: int) -> ASRF:
    model = ASRF(
        in_channels, num_classes, p.num_layers, p.num_maps, p.num_stages_asb, p.num_stages_brb, p.dropout,
        refine_in_eval=p.refine, boundary_threshold=p.boundary_threshold, tie_rule=p.tie_rule,
    )
    return model if p.weights is None else load_weights(model, p.weights, rename=official_key)
