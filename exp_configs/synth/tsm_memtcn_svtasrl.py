"""TSM-MobileNetV2 + MemoryTCN on the synthetic videos (as `tsm_memtcn -E chunk32`) trained with
SVTAS-RL's reward-weighted loss (arXiv 2309.15683: SVTAS's streaming loss times the no-gradient reward 4 ** dice + 1 of the last stage's soft Dice; SVTAS rl_dpg_loss.py).
SVTAS's SETE schedule: a step per chunk of 32 sampled frames, the state detached every chunk.

    streamseg train -D synth -M tsm_memtcn -E svtasrl
"""

from streamseg.config import RunParams
from streamseg.engine.recipes import svtas_rl_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    params.data.input = "video"
    params.data.frame_size = (32, 32)
    params.data.sample_rate = 2
    params.model.frame_size = params.data.frame_size
    params.train.chunk_size = 32
    params.train.tbptt_chunks = 1  # SETE: one chunk per step
    params.train.batch_size = 4
    params.train.epochs = 12
    params.train.lr = 1e-3
