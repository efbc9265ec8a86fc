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
