"""MS-TCN with the paper's recipe on gtea: `streamseg.config.bases.mstcn_paper` as it is.

    streamseg train -D gtea -M mstcn -E paper -o data.split=1   # then splits 2.. and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import mstcn_paper


def configure(params: RunParams) -> None:
    mstcn_paper(params)
