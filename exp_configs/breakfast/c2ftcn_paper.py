"""C2F-TCN with the official recipe (dipika-singhania/C2F-TCN train.py): Adam 1e-4 with weight decay 3e-3,
500 epochs, 100 videos per step, windows of 1200 frames at 1/10 of the frame rate, seed 42; loss CE +
0.15 truncated MSE on the log of the decoder ensemble (the generic loss on the model's output). The
official StepLR(500, 0.5) never fires within 500 epochs and is left out.

Differences: frames are subsampled (`data.sample_rate = 10`) where the official max-pools features over
chunks of 10; no temporal crop/zoom augmentation and no test-time augmentation; the last epoch's
weights are tested (the official keeps the epoch with the best *test* accuracy).

    streamseg train -D breakfast -M c2ftcn -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.data.sample_rate = 10  # official chunk_size
    params.model.window = 1200  # official max_frames_per_video
    params.train.epochs = 500
    params.train.batch_size = 100
    params.train.lr = 1e-4
    params.train.weight_decay = 3e-3
    params.train.seed = 42  # the official train.py's seed
