"""End-to-end streaming Transeger on 50salads raw video:
`streamseg.config.bases.transeger_chunk32` at the 50salads sample rate 8
(32 x 8 = 256 frames per chunk).
Start from ImageNet weights you have locally: -o model.weights=/path/to/mobilenet_v2.pth

    tools/run_singlenode.sh train 4 -D 50salads -M transeger -E chunk32 -o model.weights=...
"""

from streamseg.config import RunParams
from streamseg.config.bases import transeger_chunk32
from streamseg.engine.recipes.transeger import transeger_module as build_module  # noqa: F401  (checks chunk <= delay)


def configure(params: RunParams) -> None:
    transeger_chunk32(params)
    params.data.sample_rate = 8
