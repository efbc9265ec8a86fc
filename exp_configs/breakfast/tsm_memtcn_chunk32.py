"""End-to-end streaming TSM-MobileNetV2 + MemoryTCN on breakfast raw video:
`streamseg.config.bases.tsm_memtcn_chunk32` at the breakfast sample rate 8
(32 x 8 = 256 frames per chunk; SVTAS-RL uses 128 x 8 on this dataset).
Start from ImageNet weights you have locally: -o model.weights=/path/to/mobilenet_v2.pth

    tools/run_singlenode.sh train 4 -D breakfast -M tsm_memtcn -E chunk32 -o model.weights=...
"""

from streamseg.config import RunParams
from streamseg.config.bases import tsm_memtcn_chunk32


def configure(params: RunParams) -> None:
    tsm_memtcn_chunk32(params)
    params.data.sample_rate = 8
