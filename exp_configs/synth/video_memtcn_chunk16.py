"""End-to-end streaming on the synthetic videos: R(2+1)D-18 clip by clip (4-frame clips, each with the 4
frames before it as context, so lookahead = 3 sampled frames) + a causal MemoryTCN head; chunks of 16
sampled frames (4 whole clips: chunked == one pass), gradients through the state over 2 chunks, 4
parallel streams. Small frames, short windows and 4 epochs so that it trains on a CPU in minutes: with
8-frame clips and 8 frames of context (the GTEA config) one epoch took 340 s on one CPU thread
(docs/model_zoo.md); R(2+1)D-18 has 31 M parameters and runs once per clip on its whole window.

    tools/run_singlenode.sh train 1 -D synth -M video_memtcn -E chunk16
    (other backbones: -o model.backbone=s3d | swin3d_t | mvit_v2_s; MViT needs frame sides that are
    multiples of 32, e.g. these 32x32)
"""

from streamseg.config import RunParams
from streamseg.config.bases import synth_chunk32


def configure(params: RunParams) -> None:
    synth_chunk32(params)
    params.model.backbone = "r2plus1d_18"
    params.model.clip_len = 4
    params.model.context = 4
    params.train.chunk_size = 16  # a multiple of clip_len, so clips never straddle chunks
    params.train.epochs = 4
