"""A tiny MS-TCN experiment with a search space, for the search tests (`-E tests/search/mstcn_tiny.py`):
the real `exp_configs/synth/mstcn_quick.py` shrunk. Not collected by pytest (no test_ prefix).
Train+val+test of one trial: a few seconds on 2 CPU cores."""

from streamseg.config import RunParams, load_experiment

quick = load_experiment("synth", "mstcn", "quick")


def configure(params: RunParams) -> None:
    quick.configure(params)
    params.model.num_stages = 2
    params.model.num_layers = 3
    params.model.num_maps = 8
    params.train.epochs = 3
    params.train.lr = 5e-4  # searched below; the start of a plain run
    params.train.monitor = "acc"  # on 8 tiny videos F1@50 is 0 for most trials; accuracy varies
    params.data.num_videos = 8
    params.data.with_videos = False


def search_space(trial) -> dict:
    return {
        # on this data 3 epochs at lr 1e-5 leave val accuracy at 0, lr >= 1e-2 reach ~26 %
        "train.lr": trial.suggest_float("train.lr", 1e-5, 1e-1, log=True),
        "model.num_maps": trial.suggest_categorical("model.num_maps", [4, 8]),
    }
