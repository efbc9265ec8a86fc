"""DiffAct with the official 50Salads recipe (Finspire13/DiffAct default_configs.py `params_50salads`):
sample rate 8; decoder kernel 7 (1,214,566 parameters at 19 classes); snr_scale 1.0; conditions full /
zero / boundary05- / segment=2 (x2); Adam 5e-4, no weight decay, 5001 epochs;
class-weighted CE (no soft labels) + 0.1 T-MSE, 0.1 boundary BCE with boundaries smoothed by sigma 20
frames at 30 fps (2.5 at the sample rate); median filter of 30 (sampled) frames on the probabilities;
the rest as `streamseg.config.bases.diffact_paper`.

As the official (`main.py` / `dataset.py`): training subsamples each video from a random one of the 8
offsets, a draw per epoch and video (`data.random_offset`); testing averages the probabilities of the 8
offsets, median-filters the mean and places each sampled column at the centre of its 8 frames
(`data.test_offsets`).

    streamseg train -D 50salads -M diffact -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import diffact_paper
from streamseg.engine.recipes.diffact import diffact_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    diffact_paper(params)
    params.data.sample_rate = 8
    params.data.random_offset = True
    params.data.test_offsets = True
    params.model.decoder_kernel = 7
    params.model.snr_scale = 1.0
    params.model.cond_types = ("full", "zero", "boundary05-", "segment=2", "segment=2")
    params.model.class_weighting = True
    params.model.soft_label = None
    params.model.boundary_smooth = 20.0
    params.model.postprocess = "median"
    params.model.postprocess_size = 30
    params.train.epochs = 5001
    params.train.lr = 5e-4
    params.train.weight_decay = 0.0
