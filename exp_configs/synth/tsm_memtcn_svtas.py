"""TSM-MobileNetV2 + MemoryTCN on the synthetic videos (as `tsm_memtcn -E chunk32`) trained with
SVTAS's streaming loss (per chunk CE + 0.15 smoothing, each normalised by the video's number of chunks; SVTAS segmentation_loss.py).
SVTAS's SETE schedule: a step per chunk of 32 sampled frames, the state detached every chunk.

    streamseg train -D synth -M tsm_memtcn -E svtas
"""

from streamseg.config import RunParams
from streamseg.config.bases import synth_sete
from streamseg.engine.recipes.svtas import svtas_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    synth_sete(params)
