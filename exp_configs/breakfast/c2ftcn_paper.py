"""C2F-TCN with the official recipe on breakfast: `streamseg.config.bases.c2ftcn_paper` with the official
breakfast values (dipika-singhania/C2F-TCN): Adam 1e-4 with weight decay 3e-3, 100 videos per step, windows of 1200 frames, groups of 10; test groups of 6 to 12, equally weighted.

    streamseg train -D breakfast -M c2ftcn -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import c2ftcn_paper
from streamseg.engine.recipes.c2ftcn import c2ftcn_module as build_module  # noqa: F401  (the experiment's recipe)


def configure(params: RunParams) -> None:
    c2ftcn_paper(params)
    params.data.sample_rate = 10  # official chunk_size
    params.data.test_rates = tuple(range(6, 13))  # official eval.py chunk sizes
    params.model.window = 1200  # official max_frames_per_video
    params.train.batch_size = 100
    params.train.lr = 1e-4
    params.train.weight_decay = 3e-3
