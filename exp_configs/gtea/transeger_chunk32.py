"""End-to-end streaming Transeger on gtea raw video:
`streamseg.config.bases.transeger_chunk32` at the gtea sample rate 4
(32 x 4 = 128 frames per chunk, as SVTAS's GTEA Transeger config).
Start from ImageNet weights you have locally: -o model.weights=/path/to/mobilenet_v2.pth

    tools/run_singlenode.sh train 4 -D gtea -M transeger -E chunk32 -o model.weights=...
"""

from streamseg.config import RunParams
from streamseg.config.bases import transeger_chunk32
from streamseg.engine.recipes.transeger import transeger_module as build_module  # noqa: F401  (checks chunk <= delay)


def configure(params: RunParams) -> None:
    transeger_chunk32(params)
    params.data.sample_rate = 4
