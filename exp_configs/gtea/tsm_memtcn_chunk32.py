"""End-to-end streaming TSM-MobileNetV2 + MemoryTCN on gtea raw video:
`streamseg.config.bases.tsm_memtcn_chunk32` at the gtea sample rate 4
(32 x 4 = 128 frames per chunk, as SVTAS's GTEA TSM configs).
Start from ImageNet weights you have locally: -o model.weights=/path/to/mobilenet_v2.pth

    tools/run_singlenode.sh train 4 -D gtea -M tsm_memtcn -E chunk32 -o model.weights=...
"""

from streamseg.config import RunParams
from streamseg.config.bases import tsm_memtcn_chunk32


def configure(params: RunParams) -> None:
    tsm_memtcn_chunk32(params)
    params.data.sample_rate = 4
