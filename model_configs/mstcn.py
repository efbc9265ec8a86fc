"""MS-TCN (Farha & Gall, CVPR'19) on pre-extracted features: paper defaults (4 stages x 10 layers,
64 maps, dropout 0.5). Offline: every output frame sees the whole video (lookahead None).

`weights`: a state dict saved by the official code (yabufarha/ms-tcn, `epoch-N.model`), loaded strictly
(`-o model.weights=models/gtea/split_1/epoch-50.model`); the parameter names are the official ones.
"""

from dataclasses import dataclass

from streamseg.models import MSTCN, load_weights


@dataclass
class Params:
    num_stages: int = 4
    num_layers: int = 10
    num_maps: int = 64
    dropout: float = 0.5
    weights: str | None = None


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(num_stages=2, num_layers=3, num_maps=8)


def build_model(p: Params, in_channels: int, num_classes: int) -> MSTCN:
    model = MSTCN(in_channels, num_classes, p.num_stages, p.num_layers, p.num_maps, p.dropout)
    return model if p.weights is None else load_weights(model, p.weights)
