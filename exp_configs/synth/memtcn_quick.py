"""Causal streaming MemoryTCN on the synthetic features, trained chunk by chunk (32 frames, gradients
through the state over 2 chunks) and evaluated online (latency: 31 frames of chunk wait, no look-ahead).

    streamseg train -D synth -M memtcn -E quick
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.train.epochs = 40
    params.train.batch_size = 4
    params.train.lr = 5e-4
    params.train.chunk_size = 32
    params.train.tbptt_chunks = 2
