"""C2F-TCN with the official recipe on 50salads: `streamseg.config.bases.c2ftcn_paper` with the official
50salads values (dipika-singhania/C2F-TCN): Adam 3e-4 with weight decay 1e-3, 20 videos per step, windows of 960 frames, groups of 20; test groups of 20 to 39, equally weighted.

    streamseg train -D 50salads -M c2ftcn -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import c2ftcn_paper
from streamseg.engine.recipes.c2ftcn import c2ftcn_module as build_module  # noqa: F401  (the experiment's recipe)


def configure(params: RunParams) -> None:
    c2ftcn_paper(params)
    params.data.sample_rate = 20  # official chunk_size
    params.data.test_rates = tuple(range(20, 40))  # official eval.py chunk sizes
    params.model.window = 960  # official max_frames_per_video
    params.train.batch_size = 20
    params.train.lr = 3e-4
    params.train.weight_decay = 1e-3
