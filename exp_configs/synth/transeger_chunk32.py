"""End-to-end streaming Transeger on the synthetic videos: causal TSM-MobileNetV2 image branch, text
branch over the class names fed with the previous chunk's labels (ground truth in training), MemoryTCN
joint network; chunks of 32 sampled frames (= model.feedback_delay), gradients through the state over
2 chunks, 4 parallel streams. Small frames and a small text branch so that it trains on a CPU.

    tools/run_singlenode.sh train 1 -D synth -M transeger -E chunk32
    (baseline without the text branch: -M tsm_memtcn -E chunk32)
"""

from streamseg.config import RunParams
from streamseg.engine.recipes.transeger import transeger_module as build_module  # noqa: F401  (checks chunk <= delay)


def configure(params: RunParams) -> None:
    params.data.input = "video"
    params.data.frame_size = (32, 32)  # synth videos are 64x64; 32x32 costs ~4x less
    params.data.sample_rate = 2  # 15 fps -> 7.5 fps seen by the model
    params.model.frame_size = params.data.frame_size
    params.model.text_width = 64  # a handful of short class names
    params.model.text_heads = 2
    params.model.num_maps = 64
    params.train.chunk_size = 32
    params.model.feedback_delay = None  # = train.chunk_size after the overrides (model_configs/transeger.py)
    params.train.tbptt_chunks = 2
    params.train.batch_size = 4
    params.train.epochs = 12
    params.train.lr = 1e-3
