"""DiffAct with the official Breakfast recipe (Finspire13/DiffAct default_configs.py `params_breakfast`):
encoder 12 layers x 256 maps, input dropout 0.1 (channels and frames), decoder conditioned on encoder
layers 7/8/9, decoder 8 layers x 128 maps (11,912,800 parameters at 48 classes); Adam 1e-4, no weight
decay, 1001 epochs; loss 0.5 CE (soft labels, sigma 4) + 0.025 T-MSE for
the encoder and the decoder, 0.1 boundary BCE (boundaries smoothed with sigma 3); median filter of 15
frames on the probabilities; the rest as `streamseg.config.bases.diffact_paper`.

    streamseg train -D breakfast -M diffact -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import diffact_paper
from streamseg.engine.recipes.diffact import diffact_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    diffact_paper(params)
    params.model.encoder_layers = 12
    params.model.encoder_maps = 256
    params.model.channel_dropout = 0.1
    params.model.temporal_dropout = 0.1
    params.model.feature_layers = (7, 8, 9)
    params.model.decoder_maps = 128
    params.model.loss_encoder_smooth = 0.025
    params.model.loss_decoder_smooth = 0.025
    params.model.soft_label = 4.0
    params.model.boundary_smooth = 3.0
    params.model.postprocess = "median"
    params.model.postprocess_size = 15
    params.train.epochs = 1001
    params.train.lr = 1e-4
    params.train.weight_decay = 0.0
    params.train.val_every = 20  # official log_freq (only used with a validation split)
