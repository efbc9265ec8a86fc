"""Causal streaming MemoryTCN on the synthetic features, trained chunk by chunk (32 frames, gradients
through the state over 2 chunks) and evaluated online (latency: 31 frames of chunk wait, no look-ahead).

    streamseg train -D synth -M memtcn -E quick
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.model.num_stages = 3  # same size as synth/mstcn_quick, for a like-for-like comparison
    params.model.num_layers = 8
    params.model.num_maps = 32
    params.train.epochs = 30
    params.train.batch_size = 4
    params.train.lr = 1e-3
    params.train.chunk_size = 32
    params.train.tbptt_chunks = 2


def search_space(trial) -> dict:
    """`streamseg search -D synth -M memtcn -E quick --trials 20 --cost latency`: accuracy against
    latency; the chunk size sets the algorithmic latency ((chunk - 1) x sample rate frames)."""
    return {
        "train.lr": trial.suggest_float("train.lr", 1e-4, 1e-2, log=True),
        "model.num_layers": trial.suggest_int("model.num_layers", 4, 10),
        "model.num_maps": trial.suggest_categorical("model.num_maps", [16, 32, 64]),
        "train.chunk_size": trial.suggest_categorical("train.chunk_size", [8, 16, 32, 64]),
    }
