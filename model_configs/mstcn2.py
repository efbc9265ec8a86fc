"""MS-TCN++ (Li et al., TPAMI'20) on pre-extracted features: the official train.sh sizes (prediction
generation 11 dual-dilated layers, 3 refinement stages x 10 layers, 64 maps, dropout 0.5); 994,220
parameters for 2048-d input and 11 classes. Offline (lookahead None).

`weights`: a state dict saved by the official code (sj-li/MS-TCN2, `epoch-N.model`), loaded strictly;
the parameter names are the official ones.
"""

from dataclasses import dataclass

from streamseg.models import MSTCN2, load_weights


@dataclass
class Params:
    num_layers_pg: int = 11
    num_layers_r: int = 10
    num_refinements: int = 3
    num_maps: int = 64
    dropout: float = 0.5
    weights: str | None = None


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(num_layers_pg=4, num_layers_r=3, num_refinements=2, num_maps=8)


def build_model(p: Params, in_channels: int, num_classes: int) -> MSTCN2:
    model = MSTCN2(in_channels, num_classes, p.num_layers_pg, p.num_layers_r, p.num_refinements, p.num_maps, p.dropout)
    return model if p.weights is None else load_weights(model, p.weights)
