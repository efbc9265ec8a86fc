"""C2F-TCN with the official recipe (dipika-singhania/C2F-TCN train.py, dataset.py, eval.py): Adam 1e-4 with
weight decay 3e-3, 500 epochs, 100 videos per step, windows of 1200 frames, each frame the maximum of the
features over a group of 10 (the group's most frequent label in training: `data.pooling = "max"`), seed 42;
loss CE + 0.15 truncated MSE on the log of the decoder ensemble, the smoothing averaged over whole windows
(`c2ftcn_module`). The official StepLR(500, 0.5) never fires within 500 epochs and is left out.
Evaluation as the official eval.py (the published numbers): test-time augmentation over groups of
6 to 12, equally weighted frames (`data.test_rates`; `-o data.test_rates=[]` for the single rate, eval.py's
`--compile_result`), so `streamseg test --ckpt none -o model.weights=best_breakfast_unet.wt` gives the official
predictions.

Training augmentation as the official dataset.py: each epoch, half of the training videos re-pooled with
a group size drawn log-uniformly for a 0.5x to 2x zoom, no crop (`data.zoom_augment`, streamseg.data.zoom).

Differences: the last epoch's weights are tested (the official keeps the epoch with the best *test*
accuracy; `train.select_on=test` would be that, and is not used); the shuffle order of the videos and the
augmentation's random numbers.

    streamseg train -D breakfast -M c2ftcn -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.engine.recipes.c2ftcn import c2ftcn_module as build_module  # noqa: F401  (the experiment's recipe)


def configure(params: RunParams) -> None:
    params.data.sample_rate = 10  # official chunk_size
    params.data.pooling = "max"  # official: np.max over each group of chunk_size frames
    params.data.test_rates = tuple(range(6, 13))  # official eval.py chunk sizes
    params.data.test_rate_weights = ()
    params.data.zoom_augment = True  # official dataset.py: zoom_crop=(0.5, 2), smallest_cut=1.0
    params.model.window = 1200  # official max_frames_per_video
    params.train.epochs = 500
    params.train.batch_size = 100
    params.train.lr = 1e-4
    params.train.weight_decay = 3e-3
    params.train.seed = 42  # the official train.py's seed
