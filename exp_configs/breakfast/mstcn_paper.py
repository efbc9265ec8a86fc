"""MS-TCN with the paper's recipe (Farha & Gall, CVPR'19): Adam 5e-4, 50 epochs, one video per step,
the last epoch's weights tested (no validation split: the standard TAS splits have none, and selecting
on the test split is what inflated several published numbers).

    streamseg train -D breakfast -M mstcn -E paper -o data.split=1   # then splits 2.. and average
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.train.epochs = 50
    params.train.batch_size = 1
    params.train.lr = 5e-4
    params.train.seed = 1538574472  # the official code's seed
    params.train.shuffle = "python"  # the official training order (yabufarha/ms-tcn batch_gen.py)
