"""ASFormer with the official recipe on GTEA: `streamseg.config.bases.asformer_paper` with input channel
masking 0.5 (official: larger dropout against GTEA's over-fitting).

    streamseg train -D gtea -M asformer -E paper -o data.split=1   # then the other splits and average
"""

from streamseg.config import RunParams
from streamseg.config.bases import asformer_paper
from streamseg.engine.recipes.asformer import asformer_module as build_module  # noqa: F401 (the experiment's recipe)


def configure(params: RunParams) -> None:
    asformer_paper(params)
    params.model.channel_masking_rate = 0.5  # official: larger dropout against GTEA's over-fitting
