"""Transeger on the synthetic videos (as `transeger -E chunk32`) trained with SVTAS-RL's reward-weighted
loss (arXiv 2309.15683: SVTAS's streaming loss, per chunk CE + 0.15 smoothing normalised by the video's
number of chunks, times the no-gradient reward 4 ** dice + 1 of the last stage's soft Dice; SVTAS
rl_dpg_loss.py), a step per chunk of 32 sampled frames (SETE).

    streamseg train -D synth -M transeger -E svtasrl
"""

from streamseg.config import RunParams
from streamseg.config.bases import synth_sete
from streamseg.engine.recipes.svtas import svtas_rl_module as build_module  # noqa: F401 (checks chunk <= delay too)


def configure(params: RunParams) -> None:
    synth_sete(params)
    params.model.text_width = 64
    params.model.text_heads = 2
    params.model.num_maps = 64
    params.model.feedback_delay = None  # follows train.chunk_size after overrides (model_configs/transeger.derive)
