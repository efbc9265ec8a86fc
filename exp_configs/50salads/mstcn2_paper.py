"""MS-TCN++ with the official recipe on 50salads: `streamseg.config.bases.mstcn2_paper` as it is.

    streamseg train -D 50salads -M mstcn2 -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import mstcn2_paper


def configure(params: RunParams) -> None:
    mstcn2_paper(params)
