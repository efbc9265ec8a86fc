"""ASFormer (Yi et al., BMVC'21) on pre-extracted features: the official sizes (encoder + 3 decoders,
10 blocks each, 64 maps, r1 = r2 = 2, input channel masking 0.3; the GTEA experiment sets 0.5);
1,130,860 parameters for 2048-d input and 11 classes. The official sliding-window mask (with its known
defect) is kept so released checkpoints reproduce. Offline (lookahead None).

`weights`: a state dict saved by the official code (ChinaYi/ASFormer, `epoch-N.model`, or the released
checkpoints), loaded strictly; the parameter names are the official ones.
"""

from dataclasses import dataclass

from streamseg.models import ASFormer, load_weights


@dataclass
class Params:
    num_decoders: int = 3
    num_layers: int = 10
    num_maps: int = 64
    r1: int = 2
    r2: int = 2
    channel_masking_rate: float = 0.3
    weights: str | None = None


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(num_decoders=2, num_layers=4, num_maps=8)


def build_model(p: Params, in_channels: int, num_classes: int) -> ASFormer:
    model = ASFormer(
        in_channels, num_classes, p.num_decoders, p.num_layers, p.num_maps, p.r1, p.r2, p.channel_masking_rate
    )
    return model if p.weights is None else load_weights(model, p.weights)
