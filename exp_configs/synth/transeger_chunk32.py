"""End-to-end streaming Transeger on the synthetic videos: causal TSM-MobileNetV2 image branch, text
branch over the class names fed with the previous chunk's labels (ground truth in training), MemoryTCN
joint network; chunks of 32 sampled frames (= model.feedback_delay), gradients through the state over
2 chunks, 4 parallel streams. Small frames and a small text branch so that it trains on a CPU.

    tools/run_singlenode.sh train 1 -D synth -M transeger -E chunk32
    (baseline without the text branch: -M tsm_memtcn -E chunk32)
"""

from streamseg.config import RunParams
from streamseg.config.bases import synth_chunk32
from streamseg.engine.recipes.transeger import transeger_module as build_module  # noqa: F401  (checks chunk <= delay)


def configure(params: RunParams) -> None:
    synth_chunk32(params)
    params.model.text_width = 64  # a handful of short class names
    params.model.text_heads = 2
    params.model.num_maps = 64
    params.model.feedback_delay = None  # = train.chunk_size after the overrides (model_configs/transeger.py)
