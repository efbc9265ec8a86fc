"""Official-parity training inputs: `train.shuffle="python"|"asformer"` (the official batch generators'
order) and the chunk counts the SVTAS loss receives."""

from __future__ import annotations

import random
from pathlib import Path

from streamseg.engine.datamodule import FeatureDataModule


def _epoch_names(dm: FeatureDataModule, epoch: int) -> list[str]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return [dm.names["train"][i] for i in loader.sampler]


def test_python_shuffle_is_the_official_batch_generator_order(synth_root: Path) -> None:
    """ms-tcn batch_gen.py: random.seed(seed) (main.py), read_data shuffles the split file's list, reset
    shuffles it again in place after each epoch; restated here with the module-level random functions."""
    seed = 1538574472  # ms-tcn main.py's
    dm = FeatureDataModule(str(synth_root), 1, seed=seed, shuffle="python")
    dm.setup()
    listed = (synth_root / "splits" / "train.split1.bundle").read_text().split()
    examples = [name.removesuffix(".txt") for name in listed]
    state = random.getstate()
    random.seed(seed)
    random.shuffle(examples)
    epoch0 = list(examples)
    random.shuffle(examples)
    epoch1 = list(examples)
    random.setstate(state)
    assert epoch0 != epoch1
    assert _epoch_names(dm, 1) == epoch1 and _epoch_names(dm, 0) == epoch0  # from (seed, epoch) alone
    seeded = FeatureDataModule(str(synth_root), 1, seed=seed)
    seeded.setup()
    assert _epoch_names(seeded, 0) != epoch0  # the default order is another one


def test_asformer_shuffle_reseeds_before_each_shuffle(synth_root: Path) -> None:
    """ASFormer batch_gen.py my_shuffle: r = random.randint(0, 100); random.seed(r); shuffle (three parallel
    lists, each after random.seed(r)); restated with the module-level functions, seed 19980125 (main.py)."""
    seed = 19980125
    dm = FeatureDataModule(str(synth_root), 1, seed=seed, shuffle="asformer")
    dm.setup()
    examples, gts = list(dm.names["train"]), list(dm.names["train"])
    state = random.getstate()
    random.seed(seed)
    epochs = []
    for _ in range(2):
        r = random.randint(0, 100)
        random.seed(r)
        random.shuffle(examples)
        random.seed(r)
        random.shuffle(gts)
        epochs.append(list(examples))
    random.setstate(state)
    assert [_epoch_names(dm, 0), _epoch_names(dm, 1)] == epochs


def test_the_svtas_loss_gets_each_streams_video_length_in_chunks() -> None:
    """SVTAS's precise_sliding_num: ceil(ceil(full_length / sample_rate) / chunk). Sample rate 2, chunks of
    32: 100 frames -> 50 sampled -> 2 chunks; 128 -> 64 -> 2; 129 -> 65 -> 3; an empty slot -> 0."""
    import torch
    from torch import nn

    from streamseg.engine.batches import BatchKind
    from streamseg.engine.datamodule import DatasetInfo
    from streamseg.engine.module import SegmentationModule
    from streamseg.engine.streaming import video_chunks
    from streamseg.models import SVTASStreamLoss

    info = DatasetInfo("synth", ["a", "b"], [], 3, 15.0, 2, batch_kind=BatchKind.STREAMS)
    module = SegmentationModule(nn.Identity(), info, SVTASStreamLoss(2), torch.optim.Adam, loss_takes_chunks=True)
    batch = {"full_length": torch.tensor([100, 128, 129, 0]), "x": torch.zeros(4, 3, 32, 8, 8)}
    assert video_chunks(batch, module.info.sample_rate).tolist() == [2, 2, 3, 0]
