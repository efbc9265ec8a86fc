"""MS-TCN++ with the official recipe (sj-li/MS-TCN2 train.sh and main.py): Adam 5e-4, 100 epochs, one
video per step, MS-TCN's loss (CE + 0.15 truncated MSE), the last epoch's weights tested, seed 1538574472.

    streamseg train -D 50salads -M mstcn2 -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.train.epochs = 100  # train.sh --num_epochs=100
    params.train.batch_size = 1
    params.train.lr = 5e-4
    params.train.seed = 1538574472  # the official main.py's seed
    params.train.shuffle = "python"  # the official training order (sj-li/MS-TCN2 batch_gen.py)
