"""C2F-TCN with the official recipe on gtea: `streamseg.config.bases.c2ftcn_paper` with the official
gtea values (dipika-singhania/C2F-TCN): Adam 5e-4 with weight decay 3e-4, 11 videos per step, windows of 600 frames, groups of 4; test groups of 3, 4 and 5 weighted 1, 3, 1.

    streamseg train -D gtea -M c2ftcn -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import c2ftcn_paper
from streamseg.engine.recipes.c2ftcn import c2ftcn_module as build_module  # noqa: F401  (the experiment's recipe)


def configure(params: RunParams) -> None:
    c2ftcn_paper(params)
    params.data.sample_rate = 4  # official chunk_size
    params.data.test_rates = (3, 4, 5)  # official eval.py chunk sizes
    params.data.test_rate_weights = (1.0, 3.0, 1.0)
    params.model.window = 600  # official max_frames_per_video
    params.train.batch_size = 11
    params.train.lr = 5e-4
    params.train.weight_decay = 3e-4
