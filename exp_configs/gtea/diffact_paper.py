"""DiffAct with the official GTEA recipe (Finspire13/DiffAct default_configs.py `params_gtea`, main.py):
the model config's defaults are this config (1,204,438 parameters); Adam 5e-4, weight decay 1e-6,
10001 epochs (official "num_epochs"), 4 single-video steps accumulated per optimiser step, the count running
across epochs as the official (`train.accumulate_across_epochs`); loss 0.5 CE + 0.1 T-MSE for the encoder and
the decoder, 0.1 boundary BCE for the decoder, soft labels (sigma 1.4, unweighted), boundaries smoothed
with sigma 1; DDIM 25 steps, each video's sampling noise seeded with its index in the test split
(official `set_sampling_seed`); purge of segments <= 3 frames. The last
epoch's weights are tested (no validation split, no test-set selection).

Differences: no temporal augmentation over sample-rate offsets (sample rate 1 here, so none is lost).

    streamseg train -D gtea -M diffact -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.engine.recipes.diffact import diffact_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    params.model.seed_by_video_index = True  # official: seed = the video's index in the test list
    params.model.official_purge_end = True  # official purge: the last segment ends one frame early
    params.train.epochs = 10001
    # official main.py: one video per step, 4 steps accumulated, the count running across epochs
    params.train.batch_size = 1
    params.train.accumulate = 4
    params.train.accumulate_across_epochs = True
    params.train.lr = 5e-4
    params.train.weight_decay = 1e-6
    params.train.val_every = 100  # official log_freq (only used with a validation split)
