"""MS-TCN with the paper's recipe on EGTEA: `streamseg.config.bases.mstcn_paper`, the videos drawn in a
seeded order (this config has never used the official shuffle).

    streamseg train -D egtea -M mstcn -E paper -o data.split=1   # then splits 2.. and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import mstcn_paper


def configure(params: RunParams) -> None:
    mstcn_paper(params)
    params.train.shuffle = "seeded"
