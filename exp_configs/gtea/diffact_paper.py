"""DiffAct with the official GTEA recipe (Finspire13/DiffAct default_configs.py `params_gtea`, main.py):
the model config's defaults are this config (1,204,438 parameters); Adam 5e-4, weight decay 1e-6,
10001 epochs (official "num_epochs"); loss 0.5 CE + 0.1 T-MSE for the encoder and the decoder, 0.1
boundary BCE for the decoder, soft labels (sigma 1.4, unweighted), boundaries smoothed with sigma 1;
purge of segments <= 3 frames; the rest as `streamseg.config.bases.diffact_paper`.

Differences: no temporal augmentation over sample-rate offsets (sample rate 1 here, so none is lost).

    streamseg train -D gtea -M diffact -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import diffact_paper
from streamseg.engine.recipes.diffact import diffact_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    diffact_paper(params)
    params.model.official_purge_end = True  # official purge: the last segment ends one frame early
    params.train.epochs = 10001
    params.train.lr = 5e-4
    params.train.weight_decay = 1e-6
