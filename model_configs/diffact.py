"""DiffAct (Liu et al., ICCV'23) on pre-extracted features. The defaults are the official GTEA config
(Finspire13/DiffAct default_configs.py `params_gtea`): encoder 10 layers x 64 maps, kernel 5, decoder
conditioned on encoder layers 5/7/9; decoder 8 layers x 24 maps, kernel 5, time embedding 512; 1000
diffusion steps, 25 DDIM steps, snr_scale 0.5; purge post-processing of segments <= 3 frames. 1,204,438
parameters for 2048-d input and 11 classes. The 50Salads and Breakfast experiment configs set their own
sizes. Offline (lookahead None). Train it with its own loss (`diffact_module`): see exp_configs/*/diffact_*.py.

The `loss_*`, `class_weighting`, `soft_label` and `boundary_smooth` fields (`Params` subclasses
`DiffActLossParams`) are the official `loss_weights`, `class_weighting`, `soft_label` and `boundary_smooth`:
the `streamseg.engine.recipes.diffact.diffact_module` recipe reads them, `build_model` does not. `boundary_smooth` is in frames at the original frame rate, as official; the
recipe divides it by `data.sample_rate`.

`weights`: a state dict saved by the official code (`epoch-N.model`, or `latest.pt`), loaded strictly;
the parameter and buffer names are the official ones.
"""

from dataclasses import dataclass
from typing import Literal

from streamseg.models import DiffAct, load_weights
from streamseg.models.diffact_loss import DiffActLossParams


@dataclass
class Params(DiffActLossParams):  # + the training loss's loss_*, class_weighting, soft_label, boundary_smooth
    # encoder (official encoder_params)
    encoder_layers: int = 10
    encoder_maps: int = 64
    encoder_kernel: int = 5
    encoder_dropout: float = 0.5  # normal_dropout_rate
    channel_dropout: float = 0.5
    temporal_dropout: float = 0.5
    feature_layers: tuple[int, ...] = (5, 7, 9)
    input_instance_norm: bool = False
    # decoder (official decoder_params)
    decoder_layers: int = 8
    decoder_maps: int = 24
    decoder_kernel: int = 5
    decoder_dropout: float = 0.1
    time_emb_dim: int = 512
    # diffusion (official diffusion_params)
    timesteps: int = 1000
    sampling_steps: int = 25
    ddim_eta: float = 1.0
    snr_scale: float = 0.5
    cond_types: tuple[str, ...] = ("full", "zero", "boundary03-", "segment=1", "segment=1")
    detach_decoder: bool = False
    sampling_seed: int | None = 0  # None: sampling noise from the global RNG
    seed_by_video_index: bool = False  # seed + the video's index in its split (official set_sampling_seed)
    postprocess: Literal["none", "median", "purge"] = "purge"
    postprocess_size: int = 3
    official_purge_end: bool = False  # purge: the last segment ends one frame early (official utils.py)
    weights: str | None = None


# A tiny size that keeps the structure, for the contract, export and config sweeps (tests/configs.py)
TINY = dict(encoder_layers=3, encoder_maps=8, feature_layers=(0, 2), decoder_layers=2, decoder_maps=8,
            time_emb_dim=16, timesteps=100, sampling_steps=3)


def build_model(p: Params, in_channels: int, num_classes: int) -> DiffAct:
    model = DiffAct(
        in_channels, num_classes,
        encoder_layers=p.encoder_layers, encoder_maps=p.encoder_maps, encoder_kernel=p.encoder_kernel,
        encoder_dropout=p.encoder_dropout, channel_dropout=p.channel_dropout, temporal_dropout=p.temporal_dropout,
        feature_layers=p.feature_layers, input_instance_norm=p.input_instance_norm,
        decoder_layers=p.decoder_layers, decoder_maps=p.decoder_maps, decoder_kernel=p.decoder_kernel,
        decoder_dropout=p.decoder_dropout, time_emb_dim=p.time_emb_dim,
        timesteps=p.timesteps, sampling_steps=p.sampling_steps, ddim_eta=p.ddim_eta, snr_scale=p.snr_scale,
        cond_types=p.cond_types, detach_decoder=p.detach_decoder, sampling_seed=p.sampling_seed,
        seed_by_video_index=p.seed_by_video_index,
        postprocess=p.postprocess, postprocess_size=p.postprocess_size, official_purge_end=p.official_purge_end,
    )
    return model if p.weights is None else load_weights(model, p.weights)
