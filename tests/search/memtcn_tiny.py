"""A tiny causal MemoryTCN experiment with an architecture space, for the NNI NAS test
(`-E tests/search/memtcn_tiny.py`): the real `exp_configs/synth/memtcn_quick.py` shrunk. Not collected
by pytest (no test_ prefix)."""

from streamseg.config import RunParams, load_experiment

quick = load_experiment("synth", "memtcn", "quick")


def configure(params: RunParams) -> None:
    quick.configure(params)
    params.model.num_stages = 1
    params.model.num_layers = 2
    params.model.num_maps = 8
    params.train.epochs = 1
    params.train.lr = 1e-2
    params.train.tbptt_chunks = 1
    params.train.monitor = "acc"
    params.data.num_videos = 8
    params.data.with_videos = False


def search_space(trial) -> dict:
    return {
        "train.lr": trial.suggest_float("train.lr", 1e-3, 1e-1, log=True),  # not architecture: --nas leaves it
        "model.num_layers": trial.suggest_int("model.num_layers", 1, 3),  # depth
        "model.num_maps": trial.suggest_categorical("model.num_maps", [4, 8]),  # width
    }
