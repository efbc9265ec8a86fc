"""C2F-TCN with the official recipe (dipika-singhania/C2F-TCN train.py): Adam 5e-4 with weight decay 3e-4,
500 epochs, 11 videos per step, windows of 600 frames at 1/4 of the frame rate, seed 42; loss CE +
0.15 truncated MSE on the log of the decoder ensemble (the generic loss on the model's output). The
official StepLR(500, 0.5) never fires within 500 epochs and is left out.

Differences: frames are subsampled (`data.sample_rate = 4`) where the official max-pools features over
chunks of 4; no temporal crop/zoom augmentation and no test-time augmentation; the last epoch's
weights are tested (the official keeps the epoch with the best *test* accuracy).

    streamseg train -D gtea -M c2ftcn -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.data.sample_rate = 4  # official chunk_size
    params.model.window = 600  # official max_frames_per_video
    params.train.epochs = 500
    params.train.batch_size = 11
    params.train.lr = 5e-4
    params.train.weight_decay = 3e-4
    params.train.seed = 42  # the official train.py's seed
