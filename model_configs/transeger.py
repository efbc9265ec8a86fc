"""Transeger (SVTAS), causal: a temporal-shift MobileNetV2 image branch, a prompt-learning text branch
over the dataset's class names (a small CLIP-style transformer built here, with learnable context tokens)
fed with the labels of frame t - feedback_delay (ground truth in training, its own predictions at
inference, carried in the streaming state), and a MemoryTCN joint network. Lookahead 0; calls of at most
`feedback_delay` frames stream exactly (see streamseg/models/transeger.py). `build_model` receives the
class names from the dataset."""

from dataclasses import dataclass

from streamseg.models import Transeger, transeger_mobilenet_v2


@dataclass
class Params:
    num_stages: int = 1
    num_layers: int = 4  # SVTAS's TransegerMemoryTCNJointNet: 4 layers x 128 maps
    num_maps: int = 128
    dropout: float = 0.5
    image_dim: int = 64  # SVTAS: 1280 -> 64 per frame
    text_dim: int = 64  # SVTAS: text_embed_dim 64
    text_width: int = 256  # SVTAS: 512 (3 layers, 8 heads); 256 / 4 heads keeps 64 channels per head
    text_layers: int = 3
    text_heads: int = 4
    context_tokens: int = 8  # CoOp / SVTAS n_ctx
    class_specific_context: bool = True  # SVTAS's default
    feedback_delay: int | None = 32  # None: train.chunk_size ("the previous chunk's labels"), see derive
    shift_div: int = 8
    causal: bool = True
    weights: str | None = None  # a local torchvision MobileNetV2 state dict (e.g. ImageNet); no downloads
    text_weights: str | None = None  # a local PromptTextEncoder state dict (same class names and sizes)
    frame_size: tuple[int, ...] = (224, 224)  # must equal data.frame_size


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(num_layers=3, num_maps=8, image_dim=8, text_dim=8, text_width=16, text_layers=1, text_heads=2,
            context_tokens=2, feedback_delay=6, frame_size=(16, 16))


def derive(params) -> None:
    """After the overrides: `model.feedback_delay = None` follows `train.chunk_size` (so `-o
    train.chunk_size=16` gives a delay of 16); a number, from a config or `-o`, is kept."""
    if params.model.feedback_delay is None:
        params.model.feedback_delay = params.train.chunk_size


TAKES_CLASS_NAMES = True  # the text branch encodes the dataset's class names (config.loader.OPTIONAL)


def build_model(p: Params, in_channels: int, num_classes: int, class_names: list[str] | None = None) -> Transeger:
    return transeger_mobilenet_v2(
        num_classes, class_names, p.num_stages, p.num_layers, p.num_maps, p.dropout, image_dim=p.image_dim,
        text_dim=p.text_dim, text_width=p.text_width, text_layers=p.text_layers, text_heads=p.text_heads,
        context_tokens=p.context_tokens, class_specific_context=p.class_specific_context,
        feedback_delay=p.feedback_delay, shift_div=p.shift_div, causal=p.causal, weights=p.weights,
        text_weights=p.text_weights, frame_size=tuple(p.frame_size),
    )
