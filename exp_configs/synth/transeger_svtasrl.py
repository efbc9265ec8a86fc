"""Transeger on the synthetic videos (as `transeger -E chunk32`) trained with SVTAS-RL's reward-weighted
loss (arXiv 2309.15683: SVTAS's streaming loss, per chunk CE + 0.15 smoothing normalised by the video's
number of chunks, times the no-gradient reward 4 ** dice + 1 of the last stage's soft Dice; SVTAS
rl_dpg_loss.py), a step per chunk of 32 sampled frames (SETE).

    streamseg train -D synth -M transeger -E svtasrl
"""

from streamseg.config import RunParams
from streamseg.engine.recipes import svtas_rl_module as build_module  # noqa: F401 (checks chunk <= delay too)


def configure(params: RunParams) -> None:
    params.data.input = "video"
    params.data.frame_size = (32, 32)
    params.data.sample_rate = 2
    params.model.frame_size = params.data.frame_size
    params.model.text_width = 64
    params.model.text_heads = 2
    params.model.num_maps = 64
    params.train.chunk_size = 32
    params.model.feedback_delay = params.train.chunk_size
    params.train.tbptt_chunks = 1  # SETE: one chunk per step
    params.train.batch_size = 4
    params.train.epochs = 12
    params.train.lr = 1e-3
