"""Frame-wise baseline for synth/tsm_memtcn_chunk32: the same MobileNetV2 without temporal shift or
temporal head, same data, chunks and schedule, so the difference measures temporal modelling.

    tools/run_singlenode.sh train 1 -D synth -M mobilenet_framewise -E chunk32
"""

from streamseg.config import RunParams
from streamseg.config.bases import synth_chunk32


def configure(params: RunParams) -> None:
    synth_chunk32(params)
