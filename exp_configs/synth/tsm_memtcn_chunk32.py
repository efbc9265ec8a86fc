"""End-to-end streaming on the synthetic videos: causal TSM-MobileNetV2 + MemoryTCN, chunks of 32
sampled frames, gradients through the state over 2 chunks, 4 parallel streams. Small frames so that it
trains on a CPU in minutes.

    tools/run_singlenode.sh train 1 -D synth -M tsm_memtcn -E chunk32
    (baseline: -M mobilenet_framewise -E chunk32)
"""

from streamseg.config import RunParams
from streamseg.config.bases import synth_chunk32


def configure(params: RunParams) -> None:
    synth_chunk32(params)
