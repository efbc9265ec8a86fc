"""End-to-end streaming Transeger on gtea raw video (Videos/<vid>.mp4), with the settings of
-M tsm_memtcn -E chunk32: 224x224 frames, chunks of 32 sampled frames at sample rate 4
(32 x 4 = 128 frames per chunk, as SVTAS's GTEA Transeger config), causal shifts and convolutions
(lookahead 0), the previous chunk's labels fed back through the text branch (model.feedback_delay =
chunk size; ground truth in training), gradients through the state over 2 chunks, 2 parallel streams
per GPU. Start from ImageNet weights you have locally: -o model.weights=/path/to/mobilenet_v2.pth

    tools/run_singlenode.sh train 4 -D gtea -M transeger -E chunk32 -o model.weights=...
"""

from streamseg.config import RunParams
from streamseg.engine.recipes import transeger_module as build_module  # noqa: F401  (checks chunk <= delay)


def configure(params: RunParams) -> None:
    params.data.input = "video"
    params.data.frame_size = (224, 224)
    params.data.sample_rate = 4
    params.model.frame_size = params.data.frame_size
    params.train.chunk_size = 32
    params.model.feedback_delay = params.train.chunk_size
    params.train.tbptt_chunks = 2
    params.train.batch_size = 2  # streams per GPU
    params.train.epochs = 50
    params.train.lr = 5e-4
    params.train.grad_clip = 20.0  # the TSM reference training script clips the gradient norm at 20
    params.train.num_workers = 4
    params.train.precision = "bf16-mixed"
