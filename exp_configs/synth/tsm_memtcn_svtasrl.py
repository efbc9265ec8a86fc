"""TSM-MobileNetV2 + MemoryTCN on the synthetic videos (as `tsm_memtcn -E chunk32`) trained with
SVTAS-RL's reward-weighted loss (arXiv 2309.15683: SVTAS's streaming loss times the no-gradient reward 4 ** dice + 1 of the last stage's soft Dice; SVTAS rl_dpg_loss.py).
SVTAS's SETE schedule: a step per chunk of 32 sampled frames, the state detached every chunk.

    streamseg train -D synth -M tsm_memtcn -E svtasrl
"""

from streamseg.config import RunParams
from streamseg.config.bases import synth_sete
from streamseg.engine.recipes.svtas import svtas_rl_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    synth_sete(params)
