"""Frame-wise baseline for synth/tsm_memtcn_chunk32: the same MobileNetV2 without temporal shift or
temporal head, same data, chunks and schedule, so the difference measures temporal modelling.

    tools/run_singlenode.sh train 1 -D synth -M mobilenet_framewise -E chunk32
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.data.input = "video"
    params.data.frame_size = (32, 32)  # synth videos are 64x64; 32x32 costs ~4x less
    params.data.sample_rate = 2  # 15 fps -> 7.5 fps seen by the model
    params.model.frame_size = params.data.frame_size
    params.train.chunk_size = 32
    params.train.tbptt_chunks = 2
    params.train.batch_size = 4
    params.train.epochs = 12
    params.train.lr = 1e-3
